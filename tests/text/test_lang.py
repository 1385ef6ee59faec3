"""Language tagging: zh / en / other table, mixed scripts, nulls and input types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fbk_tasks.text.lang import HAN_WEIGHT, detect_language, script_counts

CASES = [
    # zh
    ("这个手机很好用，电池也耐用。", "zh"),
    ("質量很好，物流很快", "zh"),  # traditional characters
    ("好", "zh"),
    ("这个iPhone很好用", "zh"),
    ("物流快，包装好，5星好评👍", "zh"),
    ("客服态度差 [PHONE] 联系不上", "zh"),  # placeholders are not English words
    ("我の最爱", "zh"),  # a single kana in Chinese text
    ("𠀀𠀁很好", "zh"),  # CJK extension B
    # en
    ("Great!", "en"),
    ("OK", "en"),
    ("This product is great and the battery lasts long.", "en"),
    ("Perfect fit. Fast shipping.", "en"),
    ("Terrible quality, broke after two days", "en"),
    ("The café crème was great", "en"),
    ("great product 很好", "en"),
    ("I love it [EMAIL]", "en"),
    # other: other Latin-script languages
    ("Très bon produit, je recommande", "other"),
    ("Sehr gutes Produkt, schnelle Lieferung und gute Qualität", "other"),
    ("Muy buen producto, lo recomiendo", "other"),
    ("Prodotto ottimo, molto soddisfatto", "other"),
    ("Produto muito bom, chegou rápido", "other"),
    ("Het product is zeer goed", "other"),
    # other: other scripts
    ("とても良いです", "other"),
    ("品質最高です。また買います", "other"),
    ("Отличный товар, рекомендую", "other"),
    ("منتج رائع جدا", "other"),
    ("최고예요 배송 빨라요", "other"),
    ("สินค้าดีมาก", "other"),
    ("Sản phẩm rất tốt", "other"),
    # other: no letters
    ("😂😂😂", "other"),
    ("👍🏽❤️", "other"),
    ("12345", "other"),
    ("!!! ???", "other"),
    ("", "other"),
    ("[EMAIL] [PHONE]", "other"),
    # mixed zh/en: majority by weighted character count (Han counts HAN_WEIGHT letters)
    ("很好 good", "zh"),  # 2 Han * 2.5 = 5 >= 4
    ("好 good", "en"),  # 2.5 < 4
    ("质量 quality", "en"),  # 5 < 7
    ("质量很好 quality", "zh"),  # 10 > 7
    # ... but capitalised/alphanumeric Latin tokens in CJK text are product names, not words
    ("买了iPhone 15 Pro Max，很好", "zh"),
    ("iPhone XS Max好用", "zh"),
    ("华为Mate 20 Pro很好用", "zh"),
    ("good price, good quality 好", "en"),  # lower-case words still count
    # kaomoji built from kana marks are not Japanese
    ("不好用,洗头发后好多白色的块快……ヾ(@⌒ー⌒@)ノ", "zh"),
    ("好(?▽?)好ヾ ^_^?好ヾ ^_^?好ヾ ^_^?", "zh"),
    ("コーヒーが好き", "other"),  # real Japanese still is
    # English tweets with capitals, places and loan words that are foreign words elsewhere
    ("@united #worst2unitedflightsever UA1429 IAD to LAS 2/19 mechanical problems", "en"),
    ("@SouthwestAir An Oscar-worthy entrance into LA.", "en"),
    ("@AmericanAir two were non revs, right?", "en"),
    ("@united well played, ^LO.", "en"),
    ("@united is hiring - Flight Dispatcher - Chicago, IL (Network Operations Center)", "en"),
    ('@JetBlue Flight 1133 (N353JB) "Blue La La" departs @mco enroute to San Juan', "en"),
    ("um wut “@JetBlue: Our fleet's on fleek. ”", "en"),
    ("@SouthwestAir El Paso deals....May❤❤❤", "en"),  # one foreign word is no evidence
    ("iah to charlotte. #customerservice non existent", "en"),
    ("No food. No lounge. No Bueno!! Never again!!!", "en"),  # 1:1 tie -> en
    ("Ordered from amazon.com, mit Rabatt", "en"),
    # ... while foreign reviews with capitals or short words stay foreign
    ("LA QUALITÉ EST TRÈS BONNE", "other"),
    ("Trs heureux que les livres soient sur Icloud, c'est bien de pouvoir retrouver mes livres", "other"),
    ("Es ist sehr gut", "other"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_language_table(text, expected):
    assert detect_language(pa.array([text])).to_pylist() == [expected]


def test_whole_table_in_one_call_matches_row_by_row():
    texts = [t for t, _ in CASES]
    assert detect_language(pa.array(texts)).to_pylist() == [e for _, e in CASES]


def test_nulls_types_and_inputs():
    texts = ["很好", None, "Great", "", None]
    expected = ["zh", None, "en", "other", None]
    for given in (pa.array(texts), pa.chunked_array([texts[:1], texts[1:]]), pd.Series(texts, dtype=object), pd.Series(texts)):
        out = detect_language(given)
        assert isinstance(out, pa.Array) and out.type == pa.string()
        assert out.to_pylist() == expected
    assert len(detect_language(pa.array([], type=pa.string()))) == 0
    assert detect_language(pa.array(["x", "好", None]).slice(1)).to_pylist() == ["zh", None]


def test_chunked_processing_matches(monkeypatch):
    import fbk_tasks.text.pii as pii

    texts = [t for t, _ in CASES] * 20 + [None]
    whole = detect_language(pa.array(texts))
    monkeypatch.setattr(pii, "CHUNK_BYTES", 500)
    assert detect_language(pa.array(texts)).equals(whole)


def test_short_foreign_words_in_capitals_are_ignored():
    # 'EL' / 'DE' in capitals are codes, 'El' / 'De' / 'el' / 'de' are words
    assert detect_language(pa.array(["EL DE flight", "El de flight"])).to_pylist() == ["en", "other"]


def test_script_counts():
    c = script_counts(pa.array(["abc 很好 é ドイツ Ωщ 한국", "", None, "ヾ(@⌒ー⌒@)ノ・ゝ コーヒー"]))
    assert c["latin"].tolist()[:2] == [3, 0]
    assert c["kana"].tolist()[3] == 2  # コ ヒ: ー, ノ and the kaomoji marks are no letters
    assert c["latin_ext"].tolist()[0] == 1
    assert c["han"].tolist()[0] == 2
    assert c["kana"].tolist()[0] == 3
    assert c["other"].tolist()[0] == 2
    assert c["hangul"].tolist()[0] == 2
    assert all(v.dtype == np.int32 for v in c.values())
    assert HAN_WEIGHT == 2.5
