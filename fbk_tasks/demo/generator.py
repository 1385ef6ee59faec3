"""Synthetic customer reviews, so the demo and the benchmarks run without any real data.

``generate_reviews`` builds a raw review frame the way a marketplace export looks: English and
Chinese reviews of ~30 products in 6 categories, a star rating that agrees with the text (with
some label noise), and a configurable share of noisy, PII-carrying, broken and duplicated rows.
``DriftSpec`` switches on the kinds of drift the monitoring stage must notice.

Everything is vectorised with numpy: texts are assembled from pre-expanded template pools by
index arithmetic and element-wise string concatenation on object arrays, so a million rows take
a few seconds. The only randomness is one ``numpy.random.Generator(seed)``, drawn in a fixed
order, so the same arguments always give the same frame.

The hidden sentiment each text is written with is not an output column: the pipeline derives its
labels from ``rating`` (1-2 negative, 3 neutral, 4-5 positive).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fbk_tasks.io.atomic import atomic_path
from fbk_tasks.schema import SENTIMENT_CLASSES

__all__ = ["COLUMNS", "DriftSpec", "generate_reviews", "write_reviews", "WRITE_FORMATS"]

COLUMNS: list[str] = [
    "review_id",
    "product_id",
    "product_name",
    "product_category",
    "rating",
    "title",
    "text",
    "created_at",
    "source",
]
WRITE_FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "parquet")

NEG, NEU, POS = (SENTIMENT_CLASSES.index(c) for c in ("negative", "neutral", "positive"))
EN, ZH = 0, 1
LANGS = ("en", "zh")

# Class shares (negative, neutral, positive) without and with DriftSpec.sentiment_flip.
_SENTIMENT_P = {NEG: 0.25, NEU: 0.15, POS: 0.60}
_FLIPPED_P = {NEG: 0.65, NEU: 0.10, POS: 0.25}
_LABEL_NOISE = 0.07  # share of rated rows whose stars disagree with the text
_CUE_BLUR = 0.3  # share of rows whose opener/closer come from a neighbouring mood
_NEU_HARD = 0.3  # neutral rows below this write "positive, but negative"; up to 0.5 "positive, but so-so"
_NULL_RATING = 0.05
_NO_TITLE = 0.10
_DETAIL_SHARE = 0.10  # rows carrying harmless numbers: prices, dates, SKUs, quantities
_NEW_CATEGORY_SHARE = 0.60
_NEW_COMPLAINT_SHARE = 0.55  # of negative clauses, under DriftSpec.new_complaints
_SHIFTED_MAJORITY = 0.80


@dataclass(frozen=True)
class DriftSpec:
    """Kinds of drift to inject; all off by default (same as ``drift=None``)."""

    new_category: bool = False  # 'smart_glasses' (智能眼镜), never seen before, takes ~60% of rows
    new_complaints: bool = False  # battery swelling, app login failures, subscription fee ...
    sentiment_flip: bool = False  # negative share 25% -> 65%
    language_shift: bool = False  # the minority language becomes an 80% majority (30% zh -> 80% zh)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CATEGORIES = ("electronics", "home", "beauty", "books", "food", "clothing", "smart_glasses")
NEW_CATEGORY = "smart_glasses"

# (english name, chinese name) per category; product ids are assigned in this order: P0001 ...
_PRODUCTS: dict[str, list[tuple[str, str]]] = {
    "electronics": [
        ("Wireless Earbuds Pro", "无线蓝牙耳机 Pro"),
        ("Smart Watch S2", "智能手表 S2"),
        ("Portable Power Bank 20000mAh", "充电宝 20000毫安"),
        ("4K Action Camera", "4K运动相机"),
        ("Mechanical Keyboard K8", "机械键盘 K8"),
    ],
    "home": [
        ("Robot Vacuum V5", "扫地机器人 V5"),
        ("Memory Foam Pillow", "记忆棉枕头"),
        ("Electric Kettle 1.7L", "电热水壶 1.7升"),
        ("Bamboo Storage Shelf", "竹制置物架"),
        ("Blackout Curtains", "遮光窗帘"),
    ],
    "beauty": [
        ("Hydrating Face Serum", "补水精华液"),
        ("Matte Lipstick #12", "哑光口红 12号"),
        ("Sunscreen SPF50", "防晒霜 SPF50"),
        ("Ionic Hair Dryer", "负离子吹风机"),
        ("Gentle Facial Cleanser", "温和洗面奶"),
    ],
    "books": [
        ("The Silent Harbor (novel)", "《静默的港湾》"),
        ("Python for Data Analysis", "《Python数据分析》"),
        ("Children's Picture Atlas", "儿童地图绘本"),
        ("A Brief History of Tea", "《茶的简史》"),
        ("Mindful Cooking Cookbook", "《轻食料理》"),
    ],
    "food": [
        ("Dark Roast Coffee Beans 1kg", "深度烘焙咖啡豆 1kg"),
        ("Mixed Nuts Gift Box", "每日坚果礼盒"),
        ("Longjing Green Tea 250g", "西湖龙井 250克"),
        ("Spicy Beef Jerky", "麻辣牛肉干"),
        ("Organic Honey 500g", "有机蜂蜜 500克"),
    ],
    "clothing": [
        ("Men's Down Jacket", "男士羽绒服"),
        ("Women's Running Shoes", "女士跑步鞋"),
        ("Cotton Crew T-Shirt", "纯棉圆领T恤"),
        ("Wool Scarf", "羊毛围巾"),
        ("Slim Fit Jeans", "修身牛仔裤"),
    ],
    "smart_glasses": [
        ("AR Smart Glasses X1", "智能眼镜 X1"),
        ("Audio Glasses Lite", "音频眼镜 Lite"),
        ("Smart Glasses Pro 2", "智能眼镜 Pro 2"),
        ("Translation Glasses T3", "翻译眼镜 T3"),
    ],
}

_PROD_CAT = np.array([CATEGORIES.index(c) for c in CATEGORIES for _ in _PRODUCTS[c]], dtype=np.int64)
_PROD_ID = np.array([f"P{i + 1:04d}" for i in range(len(_PROD_CAT))], dtype=object)
_PROD_NAME = np.array(
    [[en for c in CATEGORIES for en, _ in _PRODUCTS[c]], [zh for c in CATEGORIES for _, zh in _PRODUCTS[c]]],
    dtype=object,
)  # [lang, product]
_CAT_NAME = np.array(CATEGORIES, dtype=object)
_OLD_PRODUCTS = np.flatnonzero(_PROD_CAT != CATEGORIES.index(NEW_CATEGORY))
_NEW_PRODUCTS = np.flatnonzero(_PROD_CAT == CATEGORIES.index(NEW_CATEGORY))
# Some products sell far more than others (Zipf-like popularity, fixed by position).
_OLD_WEIGHTS = 1.0 / np.sqrt(1.0 + (np.arange(len(_OLD_PRODUCTS)) * 7) % len(_OLD_PRODUCTS))
_OLD_WEIGHTS /= _OLD_WEIGHTS.sum()

# --------------------------------------------------------------------------------------------
# Vocabulary: clause templates per (language, aspect, polarity); {slot}s expand combinatorially
# --------------------------------------------------------------------------------------------

_GENERIC_ASPECTS = ("delivery", "quality", "price", "service", "packaging")
_CATEGORY_ASPECTS: dict[str, tuple[str, ...]] = {
    "electronics": ("battery", "screen", "sound", "setup"),
    "home": ("assembly", "durability"),
    "beauty": ("scent", "skin"),
    "books": ("story", "print"),
    "food": ("taste", "freshness"),
    "clothing": ("fit", "fabric"),
    "smart_glasses": ("battery", "screen", "sound", "setup", "fit"),
}
NEW_COMPLAINT = "new_complaint"  # only ever used for negative clauses, under DriftSpec.new_complaints

_EN_FILL = {
    "very": ["very", "really", "super", "quite", "extremely", "pretty"],
    "good": ["good", "great", "excellent", "impressive", "solid"],
    "bad": ["poor", "bad", "terrible", "disappointing", "awful"],
    "okay": ["okay", "average", "acceptable", "so-so", "fine I guess"],
    "early": ["a day early", "two days early", "earlier than promised", "right on time", "the next day"],
    "long": ["two weeks", "almost a month", "ten days", "forever", "three weeks"],
    "late": ["a week late", "ten days late", "two weeks late", "way too late"],
    "short": ["two days", "a week", "one use", "three days", "a month"],
    "quick": ["within an hour", "right away", "the same day", "in minutes"],
    "slow": ["after two days", "very slowly", "only after three emails"],
    "lasting": ["all day", "for days", "a whole week", "two full days"],
    "dies": ["in two hours", "within an hour", "after half a day", "overnight"],
    "well": ["well", "great", "perfectly", "really well"],
    "minutes": ["two minutes", "five minutes", "no time at all", "ten minutes"],
    "often": ["all the time", "every other day", "constantly"],
    "used": ["a month", "three months", "half a year", "a year"],
    "lovely": ["lovely", "amazing", "fresh", "really nice"],
    "perfectly": ["perfectly", "just right", "like a glove"],
}
_ZH_FILL = {
    "v": ["很", "非常", "特别", "超级", "挺"],
    "days": ["两天", "一天", "隔天", "第二天"],
    "long": ["一周", "十天", "半个月", "好久"],
    "short": ["两天", "一周", "三天", "一次"],
    "used": ["一个月", "三个月", "半年", "一年"],
    "lasting": ["好几天", "一整天", "一个星期"],
}

# aspect -> (negative, neutral, positive) templates; index order must match SENTIMENT_CLASSES.
_EN: dict[str, tuple[list[str], list[str], list[str]]] = {
    "delivery": (
        ["delivery took {long}", "it arrived {late}", "the parcel was lost and reshipped {long} later",
         "the courier left it in the rain", "shipping was {very} slow"],
        ["delivery took a little longer than expected", "shipping was okay", "it arrived {late} but fine",
         "the tracking was not updated for a couple of days"],
        ["delivery was {very} fast", "it arrived {early}", "shipping was quick and the tracking was accurate",
         "the parcel came {early}", "the courier was {very} friendly"],
    ),
    "quality": (
        ["the quality is {very} {bad}", "it broke after {short}", "it feels {very} cheap",
         "the quality is not good at all", "it stopped working after {short}"],
        ["the quality is {okay}", "build quality is average", "the quality is not great, not terrible",
         "it feels a bit cheap but works"],
        ["the quality is {very} {good}", "build quality feels {good}", "it feels {very} solid",
         "the quality is not bad at all", "it is well made and sturdy"],
    ),
    "price": (
        ["it is {very} overpriced", "not worth the money", "a total waste of money",
         "way too expensive for this quality", "I paid far too much for this"],
        ["the price is a bit high", "a little expensive for what it is", "the price is fair I guess",
         "not cheap, not expensive"],
        ["the price is {very} reasonable", "great value for the money", "worth every penny",
         "the price is not bad", "it was cheaper than in the store"],
    ),
    "service": (
        ["customer service was {very} rude", "the seller never replied", "support ignored my emails",
         "the return process was a nightmare", "customer service kept giving me the runaround"],
        ["customer service replied {slow}", "support was polite but not very helpful",
         "the seller took a while to answer"],
        ["customer service was {very} helpful", "the seller answered {quick}", "support solved my issue {quick}",
         "the seller was {very} friendly"],
    ),
    "packaging": (
        ["the box was crushed", "the packaging was torn open", "it came with no protection at all",
         "the seal was broken"],
        ["the packaging is basic", "the box was a little dented", "simple packaging, nothing fancy"],
        ["the packaging was {very} neat", "it was {very} well packed", "it came in a nice gift box",
         "everything was wrapped carefully"],
    ),
    "battery": (
        ["the battery dies {dies}", "battery life is {very} {bad}", "it won't hold a charge",
         "it takes forever to charge"],
        ["battery life is {okay}", "the battery lasts about a day", "charging is a bit slow"],
        ["battery life is {very} {good}", "the battery lasts {lasting}", "it charges {very} fast"],
    ),
    "screen": (
        ["the screen has dead pixels", "the display flickers", "the screen scratched after {short}"],
        ["the screen is {okay}", "the display is a bit dim outdoors"],
        ["the screen is {very} sharp", "the display is bright and clear", "colors look {good}"],
    ),
    "sound": (
        ["the sound is tinny", "there is constant crackling", "the left side stopped working after {short}"],
        ["the sound is {okay}", "the bass is a bit weak"],
        ["sound quality is {very} {good}", "the bass is {very} rich", "noise cancelling works {well}"],
    ),
    "setup": (
        ["it keeps disconnecting", "pairing fails {often}", "the instructions are useless"],
        ["setup was a bit confusing", "the manual could be clearer"],
        ["setup took {minutes}", "pairing was {very} easy", "the app is {very} easy to use"],
    ),
    "assembly": (
        ["parts were missing", "the holes don't line up", "assembly was a nightmare"],
        ["assembly took a while", "some screws were hard to fit"],
        ["assembly was {very} easy", "it went together in {minutes}"],
    ),
    "durability": (
        ["it broke after {short}", "it started wobbling after {short}", "the handle snapped off"],
        ["it shows some wear after {used}", "it's okay for light use"],
        ["it feels {very} sturdy", "it still works perfectly after {used}"],
    ),
    "scent": (
        ["the smell is {very} chemical", "it smells awful", "the fragrance gave me a headache"],
        ["the scent is a bit strong", "the smell is okay"],
        ["the scent is {very} pleasant", "it smells {lovely}"],
    ),
    "skin": (
        ["it broke me out", "it made my skin red and itchy", "I had an allergic reaction"],
        ["I don't see much difference yet", "it's a little greasy but okay"],
        ["my skin feels {very} soft", "it absorbs quickly and is not greasy", "no irritation at all"],
    ),
    "story": (
        ["the story is {very} boring", "I gave up halfway", "the plot makes no sense"],
        ["the story is a bit slow in the middle", "some chapters are better than others"],
        ["the story is {very} gripping", "I couldn't put it down", "it is beautifully written"],
    ),
    "print": (
        ["pages were missing", "the print is blurry", "it is full of typos"],
        ["the font is a bit small", "the paper is thin but fine"],
        ["the print quality is {very} {good}", "the paper feels {good}"],
    ),
    "taste": (
        ["it tastes {very} stale", "it is way too salty", "the taste is {very} {bad}"],
        ["the taste is {okay}", "it is a bit too sweet for me"],
        ["it tastes {very} {good}", "the flavor is {very} rich", "my kids love the taste"],
    ),
    "freshness": (
        ["it was already expired", "it was moldy", "the bag was not sealed and it went stale"],
        ["the best-before date is a bit close", "it was fresh enough"],
        ["it arrived {very} fresh", "the expiry date is far away"],
    ),
    "fit": (
        ["it doesn't fit at all", "the size is completely off", "it is {very} uncomfortable to wear"],
        ["it runs slightly small", "it is a bit loose but wearable", "it is a little tight around the shoulders"],
        ["it fits {perfectly}", "it is true to size", "it is {very} comfortable to wear"],
    ),
    "fabric": (
        ["it started pilling after {short}", "the color faded after one wash", "the stitching came apart"],
        ["the fabric is a bit thin", "the color is slightly different from the photos"],
        ["the fabric is {very} soft", "the material feels premium"],
    ),
    NEW_COMPLAINT: (
        ["the battery started swelling after {short}", "the battery is bulging and the case cracked",
         "I can't log into the app anymore", "the app login fails every time",
         "they now charge a subscription fee for basic features", "the monthly subscription fee is a rip-off",
         "the app keeps logging me out"],
        [],
        [],
    ),
}

_ZH: dict[str, tuple[list[str], list[str], list[str]]] = {
    "delivery": (
        ["物流{v}慢", "等了{long}才到", "快递丢件了，补发又等了{long}", "快递员直接扔在门口", "发货拖了{long}"],
        ["物流速度一般", "快递比预计晚了一天", "物流还行吧", "发货有点慢"],
        ["物流{v}快", "快递{days}就到了", "发货{v}及时", "快递小哥{v}负责，送货上门"],
    ),
    "quality": (
        ["质量{v}差", "用了{short}就坏了", "做工粗糙", "质量不怎么样", "质量跟图片差太多"],
        ["质量还行", "做工一般般", "质量中规中矩", "质量说不上好，也说不上差"],
        ["质量{v}好", "做工{v}精细", "质量没得说", "用料扎实", "质量还不错"],
    ),
    "price": (
        ["价格{v}贵，完全不值", "不值这个价", "比别家贵了不少", "纯属交智商税", "这价格简直是抢钱"],
        ["价格有点贵", "价格还可以", "稍微有点贵", "价格偏高了一点"],
        ["性价比{v}高", "价格{v}实惠", "这个价格很值", "价格不贵", "比超市便宜多了"],
    ),
    "service": (
        ["客服态度{v}差", "客服根本不理人", "退货{v}麻烦", "售后一直推脱"],
        ["客服回复有点慢", "客服态度还行，就是解决不了问题", "售后处理一般"],
        ["客服{v}耐心", "客服回复{v}及时", "卖家服务态度{v}好", "售后处理得{v}快"],
    ),
    "packaging": (
        ["包装破了", "盒子都压扁了", "收到时封口是开的", "包装太简陋，东西都撒了"],
        ["包装{v}简单", "外包装有点压痕", "包装一般"],
        ["包装{v}严实", "包装{v}精美，送人很合适", "包得很仔细"],
    ),
    "battery": (
        ["电池{v}不耐用", "充一次电用不了半天", "续航{v}差", "充不进电"],
        ["续航一般", "充电有点慢", "续航勉强够用一天"],
        ["续航{v}给力", "电池{v}耐用", "充电{v}快", "充一次能用{lasting}"],
    ),
    "screen": (
        ["屏幕有坏点", "屏幕一直闪", "屏幕用了{short}就花了"],
        ["屏幕还行", "户外看屏幕有点暗"],
        ["屏幕{v}清晰", "显示效果{v}好", "色彩{v}鲜艳"],
    ),
    "sound": (
        ["有杂音", "声音{v}小", "右耳用了{short}就没声音了"],
        ["音质中规中矩", "低音有点弱"],
        ["音质{v}好", "低音{v}震撼", "降噪效果{v}明显"],
    ),
    "setup": (
        ["蓝牙老是断连", "怎么都连不上", "说明书等于没有"],
        ["设置有点麻烦", "说明书写得不太清楚"],
        ["连接{v}方便", "几分钟就设置好了", "APP{v}好用"],
    ),
    "assembly": (
        ["少了零件", "孔位对不上", "安装{v}麻烦"],
        ["安装花了点时间", "有几个螺丝不太好拧"],
        ["安装{v}简单", "十分钟就装好了"],
    ),
    "durability": (
        ["用了{short}就坏了", "把手断了", "用了{short}就开始晃"],
        ["用了{used}有点磨损", "轻度使用还行"],
        ["{v}结实", "用了{used}还跟新的一样"],
    ),
    "scent": (
        ["味道{v}刺鼻", "一股化学味", "闻着头疼"],
        ["味道有点浓", "味道还行"],
        ["味道{v}好闻", "香味{v}淡雅"],
    ),
    "skin": (
        ["用了过敏", "脸上爆痘了", "用完皮肤又红又痒"],
        ["效果不明显", "有点油，但还能接受"],
        ["用完皮肤{v}滋润", "吸收{v}快，不油腻", "敏感肌用着也没问题"],
    ),
    "story": (
        ["内容{v}无聊", "看了一半就看不下去了", "情节莫名其妙"],
        ["中间有点拖沓", "内容一般，适合打发时间"],
        ["内容{v}精彩", "一口气读完了", "文笔{v}好"],
    ),
    "print": (
        ["缺页了", "印刷模糊", "错别字{v}多"],
        ["字有点小", "纸张偏薄"],
        ["印刷{v}清晰", "纸张手感{v}好"],
    ),
    "taste": (
        ["{v}难吃", "太咸了", "有股怪味"],
        ["口味一般", "有点偏甜", "味道还行"],
        ["味道{v}好", "口感{v}棒", "孩子{v}喜欢吃"],
    ),
    "freshness": (
        ["收到就过期了", "发霉了", "没有封口，都不脆了"],
        ["保质期有点短", "新鲜度一般"],
        ["{v}新鲜", "生产日期{v}新"],
    ),
    "fit": (
        ["尺码完全不对", "穿着{v}不舒服", "根本穿不上"],
        ["尺码偏小一点", "有点宽松，但能穿", "肩膀有点紧"],
        ["尺码{v}标准", "穿着{v}舒服", "大小刚刚好"],
    ),
    "fabric": (
        ["穿了{short}就起球", "洗一次就褪色", "线头{v}多，开线了"],
        ["面料有点薄", "颜色和图片有点色差"],
        ["面料{v}舒服", "料子{v}好"],
    ),
    NEW_COMPLAINT: (
        ["用了{short}电池就鼓包了", "电池鼓包，外壳都裂了", "APP一直登录不上", "登录老是失败",
         "基础功能居然要收订阅费", "每个月还要交订阅费，坑人", "APP老是自动退出登录"],
        [],
        [],
    ),
}

# Pieces around the clauses. Each entry is (text, next_clause_capitalised).
_EN_OPENERS = (
    [("", True), ("Very disappointed. ", True), ("Used it for two days. ", True), ("Honestly, ", False),
     ("Not happy. ", True), ("Where do I start. ", True), ("Bought this last month and ", False)],
    [("", True), ("It's okay. ", True), ("Mixed feelings. ", True), ("Used it for a few days. ", True),
     ("Honestly, ", False), ("Well, ", False)],
    [("", True), ("Really happy with this. ", True), ("Second time buying. ", True),
     ("Bought this for my mom and ", False), ("Used it for a week now. ", True), ("Honestly, ", False),
     ("Wow. ", True)],
)
_EN_CLOSERS = (
    [".", "!", ". Would not recommend.", ". Returning it.", ". Waste of money.", ". Never again.",
     ". Not great.", ". Avoid."],
    [".", ". It's fine for the price.", ". Nothing special.", ". Might buy again, might not.",
     ". Not bad, not great.", ". It does the job.", ". Three stars."],
    [".", "!", ". Would recommend.", ". Highly recommend!", ". Will buy again.", ". Love it.",
     ". Not bad at all.", ". Very happy."],
)
_ZH_OPENERS = (
    ["", "差评！", "太失望了，", "用了两天，", "说实话，", "第一次在这家买，"],
    ["", "收到了，", "用了几天，", "怎么说呢，", "给家里人买的，"],
    ["", "收到了，", "第二次购买了，", "给家人买的，", "用了一段时间了，", "好评！"],
)
_ZH_CLOSERS = (
    ["。", "！", "，不会再买了。", "，申请退货了。", "，大家别买。", "，差评。", "，太坑了。"],
    ["。", "，凑合用吧。", "，总体一般。", "，还可以吧。", "，看个人需求吧。", "，三星吧。"],
    ["。", "！", "，推荐购买。", "，会回购的。", "，五星好评！", "，值得入手。", "，总体很满意。"],
)
# Connector kinds: and, contrast (positive then weaker), concede (negative then a positive aside).
_AND, _CONTRAST, _CONCEDE = 0, 1, 2
_EN_CONNECTORS = (
    [(", and ", False), (". ", True), (", ", False), (", also ", False), ("; ", False), (". Also, ", False)],
    [(", but ", False), (". However, ", False), (", though ", False), (". The only thing: ", False),
     (". Only downside: ", False)],
    [(", although ", False), (". The only good thing: ", False), (", even if ", False), (". To be fair, ", False)],
)
_ZH_CONNECTORS = (
    ["，", "，", "，而且", "，另外", "。"],
    ["，但是", "，就是", "，不过", "，可惜"],
    ["，唯一的优点是", "，虽然", "，好在"],
)
_TITLES = (
    (
        ["Disappointed", "Do not buy", "Waste of money", "Terrible", "Broke quickly", "Not as described",
         "Not great", "Avoid"],
        ["It's okay", "Average", "Decent but not perfect", "Mixed feelings", "Does the job", "Could be better",
         "Not bad"],
        ["Great product", "Love it", "Excellent value", "Highly recommend", "Exactly what I needed",
         "Very happy", "Five stars", "Great purchase", "Not bad at all"],
    ),
    (
        ["差评", "很失望", "别买", "质量太差", "上当了", "不推荐"],
        ["一般般", "还行", "中规中矩", "凑合", "有好有坏"],
        ["好评", "非常满意", "值得购买", "超出预期", "推荐", "很喜欢"],
    ),
)


def _expand(template: str, fills: dict[str, list[str]]) -> list[str]:
    slots = re.findall(r"\{(\w+)\}", template)
    if not slots:
        return [template]
    out = []
    for combo in itertools.product(*(fills[s] for s in slots)):
        text = template
        for slot, value in zip(slots, combo):
            text = text.replace("{" + slot + "}", value, 1)
        out.append(text)
    return out


class _Pool:
    """Every text fragment once; rows hold integer ids into it, strings are made only at the end."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self._ids: dict[str, int] = {}

    def add(self, s: str) -> int:
        if s not in self._ids:
            self._ids[s] = len(self.strings)
            self.strings.append(s)
        return self._ids[s]

    def ids(self, strings) -> np.ndarray:
        return np.array([self.add(s) for s in strings], dtype=np.int64)

    def freeze(self) -> None:
        self.obj = np.array(self.strings, dtype=object)
        self.arrow = pa.array(self.strings, type=pa.large_string())
        self.arrow32 = pa.array(self.strings, type=pa.string())


_POOL = _Pool()
_EMPTY = _POOL.add("")
_SPACE = _POOL.add(" ")


class _Lists:
    """Lists under integer codes, flattened so that each row picks an entry by index arithmetic."""

    def __init__(self, lists: list[list]):
        sizes = np.array([len(x) for x in lists], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.sizes = sizes
        self.items = [s for x in lists for s in x]

    def index(self, code: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Position in the table of a uniform pick, per row, from the list under ``code``."""
        size = self.sizes[code]
        if np.any(size == 0):
            raise AssertionError("generator picked from an empty template pool")
        return self.offsets[code] + np.minimum((u * size).astype(np.int64), size - 1)



class _Table(_Lists):
    """_Lists of text fragments, each also given its id in _POOL."""

    def __init__(self, lists: list[list[str]]):
        super().__init__(lists)
        self.ids = _POOL.ids(self.items)

    def pick(self, code: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Pool ids of a uniform pick, per row, from the list under ``code``."""
        return self.ids[self.index(code, u)]


def _capitalise(s: str) -> str:
    return s[:1].upper() + s[1:]


_ASPECTS: tuple[str, ...] = tuple(_EN)
assert tuple(_ZH) == _ASPECTS
_N_ASPECTS = len(_ASPECTS)
_NEW_COMPLAINT_IDX = _ASPECTS.index(NEW_COMPLAINT)


def _clause_code(lang, pol, aspect):
    return (lang * 3 + pol) * _N_ASPECTS + aspect


def _build_clauses() -> tuple[_Table, np.ndarray]:
    lists = []
    for vocab, fills in ((_EN, _EN_FILL), (_ZH, _ZH_FILL)):
        for pol in range(3):
            for aspect in _ASPECTS:
                lists.append([s for t in vocab[aspect][pol] for s in _expand(t, fills)])
    table = _Table(lists)
    return table, _POOL.ids(_capitalise(s) for s in table.items)


_CLAUSES, _CLAUSE_CAP_IDS = _build_clauses()



def _category_aspects() -> tuple[np.ndarray, np.ndarray]:
    """[category, j] -> aspect index (generic aspects plus the category's own), and counts."""
    lists = [[_ASPECTS.index(a) for a in _GENERIC_ASPECTS + _CATEGORY_ASPECTS[c]] for c in CATEGORIES]
    table = np.zeros((len(lists), max(map(len, lists))), dtype=np.int64)
    for c, ids in enumerate(lists):
        table[c, : len(ids)] = ids
    return table, np.array([len(x) for x in lists], dtype=np.int64)


_CAT_ASPECTS, _CAT_ASPECT_N = _category_aspects()


def _flags_table(per_lang) -> tuple[_Table, np.ndarray]:
    """[lang][kind] -> entries (text or (text, capitalise_next)); code = lang * kinds + kind."""
    lists, flags = [], []
    for lang_lists in per_lang:
        for entries in lang_lists:
            lists.append([e[0] if isinstance(e, tuple) else e for e in entries])
            flags.extend(bool(e[1]) if isinstance(e, tuple) else False for e in entries)
    return _Table(lists), np.array(flags or [False], dtype=bool)


_OPENERS, _OPENER_CAP = _flags_table([_EN_OPENERS, _ZH_OPENERS])
_CLOSERS, _ = _flags_table([_EN_CLOSERS, _ZH_CLOSERS])
_CONNECTORS, _CONNECTOR_CAP = _flags_table([_EN_CONNECTORS, _ZH_CONNECTORS])
_TITLE_TABLE, _ = _flags_table([list(_TITLES[EN]), list(_TITLES[ZH])])
_PROD_ID_IDS = _POOL.ids(_PROD_ID)
_PROD_NAME_IDS = np.stack([_POOL.ids(_PROD_NAME[EN]), _POOL.ids(_PROD_NAME[ZH])])  # [lang, product]
_CAT_IDS = _POOL.ids(CATEGORIES)
_SOURCE_ID = _POOL.add("generated")


# --------------------------------------------------------------------------------------------
# Extras: harmless numbers, PII, noise, bad rows
# --------------------------------------------------------------------------------------------

_EMAIL_USERS = np.array(["john.doe", "maryw", "zhang.wei", "li.na", "alex_k", "wang.fang", "sam.taylor",
                         "chen_jing", "mike.r", "liu.yang"], dtype=object)
_EMAIL_DOMAINS = np.array(["example.com", "gmail.com", "qq.com", "163.com", "outlook.com", "yahoo.com",
                           "foxmail.com"], dtype=object)
_US_AREAS = np.array(["212", "310", "415", "646", "206", "312", "617", "503"], dtype=object)
_CN_MOBILE = np.array(["138", "139", "135", "136", "137", "150", "151", "158", "159", "186", "187", "188",
                       "177", "199"], dtype=object)
_CN_REGIONS = np.array([[int(ch) for ch in r] for r in
                        ("110101", "310104", "440305", "330106", "510107", "420102", "320102", "370202")],
                       dtype=np.int64)
_CN_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_CN_ID_CHECK = np.array(list("10X98765432"), dtype=object)
_IP_FIRST = np.array(["192", "10", "172", "203", "58", "114", "220", "66"], dtype=object)

_PII_KINDS = ("email", "phone_us", "phone_cn", "card", "cn_id", "ipv4")
_PII_P = np.array([[0.25, 0.30, 0.05, 0.20, 0.05, 0.15],   # en
                   [0.20, 0.05, 0.35, 0.15, 0.15, 0.10]])  # zh
_PII_WRAP = (
    {
        "email": [(" Contact me at ", " if you need photos."), (" My email is ", "."), (" Email ", " for details.")],
        "phone_us": [(" Call me at ", " for details."), (" My number is ", ", text me.")],
        "phone_cn": [(" My Chinese number is ", "."), (" WeChat/phone: ", ".")],
        "card": [(" They charged my card ", " twice!"), (" Card used: ", ".")],
        "cn_id": [(" ID number for customs: ", "."), (" They asked for my ID ", " to verify.")],
        "ipv4": [(" Order placed from IP ", "."), (" The app shows a login from ", ", not me!")],
    },
    {
        "email": [("我的邮箱", "，有问题请联系。"), ("邮箱：", "。")],
        "phone_us": [("美国的朋友电话", "。"), ("海外电话", "。")],
        "phone_cn": [("有问题打我电话", "。"), ("手机号", "，麻烦尽快联系我。"), ("联系电话：", "。")],
        "card": [("银行卡", "被扣了两次钱。"), ("我用的卡号是", "。")],
        "cn_id": [("身份证号", "都填了还要验证。"), ("实名认证用的身份证", "。")],
        "ipv4": [("登录IP显示", "，不是我本人。"), ("后台记录的IP是", "。")],
    },
)

_NOISE_KINDS = ("html", "entity", "link", "ad", "emoji", "fullwidth", "whitespace")
_HTML_WRAP = [("<p>", "</p>"), ('<div class="review-body">', "<br/></div>"), ("<b>", "</b><br>"),
              ("<span style=\"color:red\">", "</span>")]
_ENTITY_WRAP = [("&quot;", "&quot;"), ("", " &amp; thanks&nbsp;!"), ("&lt;3 ", ""), ("", "&nbsp;&nbsp;&#128077;")]
_LINKS = ([" https://bit.ly/3xYz9Qa", " more pics: https://imgur.com/a/Xy12Ab", " (see http://amzn.to/2kL0pQ)"],
          [" 详情见 http://t.cn/A6x8Kd2", " https://m.tb.cn/h.5Zx9pQ", " 视频链接 https://v.douyin.com/iRkX7/"])
_ADS = ([" Visit www.deals-shop.com for 50% off!", " Use code SAVE20 at cheap-gadgets.net",
         " Follow my store for free gifts >>> www.best-buy-deals.cc"],
        [" 加微信 abc123 领优惠", " 【广告】加V：shop8888，返现5元", " 关注店铺领10元无门槛券，加QQ 2783645"])
_EMOJI = (["😡", "👎👎", "💔", "🤬😤", "🙄"], ["🤔", "😐", "🙂", "🤷"], ["👍👍", "😍", "🥰🥰", "💯", "❤️❤️❤️", "😊"])
_FULLWIDTH = str.maketrans({**{chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}, " ": "\u3000"})
_ZH_FULLWIDTH_TAIL = ["（ｐｓ：第２次买）", "ＯＫ！！", "　ＶＩＰ客户　", "（ｘ２）"]

_BAD_KINDS = ("empty_text", "blank_text", "rating_out_of_range", "rating_word", "created_unparseable",
              "created_future", "long_text", "emoji_only")
_BLANKS = ["   ", "\n\t ", " \u3000 ", "\t"]
_BAD_RATING_WORDS = ["five", "four stars", "five"]
_BAD_DATES = ["yesterday", "last week", "32/13/2025", "yesterday"]
_EMOJI_ONLY = ["😀😀😀", "👍👍👍👍", "😡😡", "🔥🔥🔥💯", "❤️"]
_LONG_TEXT_MIN = 6000


def _digits_to_str(digits: np.ndarray) -> np.ndarray:
    """(rows, k) ints 0-9, or ascii codes >= 32, to an object array of k-char strings."""
    codes = np.where(digits < 10, digits + 48, digits).astype(np.uint8)
    width = codes.shape[1]
    return np.ascontiguousarray(codes).view(f"S{width}").ravel().astype(f"U{width}").astype(object)


def _ints_to_str(values: np.ndarray, width: int = 0) -> np.ndarray:
    text = np.asarray(values, dtype=np.int64).astype(str)
    if width:
        text = np.strings.zfill(text, width)
    return text.astype(object)


_DIGIT_PAIRS = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], dtype=np.uint8)


def _digit_bytes(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative ints below 10**width to a (rows, width) matrix of zero-padded ASCII digits."""
    values = np.asarray(values, dtype=np.int64)
    out = np.empty((len(values), width), dtype=np.uint8)
    for end in range(width, 0, -2):  # two digits at a time, from the right
        pair = _DIGIT_PAIRS[values % 100]
        if end == 1:
            out[:, 0] = pair[:, 1]
        else:
            out[:, end - 2:end] = pair
        values = values // 100
    return out


def _fixed_width_arrow(chars: np.ndarray) -> pa.Array:
    """A (rows, width) uint8 matrix of UTF-8 bytes, one string per row, as an arrow array."""
    rows, width = chars.shape
    offsets = np.arange(rows + 1, dtype=np.int64) * width
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    return pa.LargeStringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


def _timestamps_arrow(seconds: np.ndarray, start: np.datetime64) -> pa.Array:
    """'YYYY-MM-DDTHH:MM:SSZ' for ``start`` + seconds (>= 0), without per-row formatting."""
    day = seconds // 86400
    n_days = int(day.max()) + 1 if len(day) else 1
    dates = np.datetime_as_string(start.astype("datetime64[D]") + np.arange(n_days), unit="D")
    date_bytes = dates.astype("S10").view(np.uint8).reshape(n_days, 10)
    sod = seconds % 86400
    chars = np.empty((len(seconds), 20), dtype=np.uint8)
    chars[:, :10] = date_bytes[day]
    chars[:, 10], chars[:, 13], chars[:, 16], chars[:, 19] = ord("T"), ord(":"), ord(":"), ord("Z")
    chars[:, 11:13] = _digit_bytes(sod // 3600, 2)
    chars[:, 14:16] = _digit_bytes(sod // 60 % 60, 2)
    chars[:, 17:19] = _digit_bytes(sod % 60, 2)
    return _fixed_width_arrow(chars)


def _review_ids_arrow(prefix: str, numbers: np.ndarray) -> pa.Array:
    head = np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8)
    width = max(7, len(str(int(numbers.max())))) if len(numbers) else 7
    if width > 7:  # beyond 10 million rows f"{i:07d}" is no longer fixed-width
        digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.large_string()), 7, "0")
        return pc.binary_join_element_wise(pa.scalar(prefix, pa.large_string()), digits, _ARROW_EMPTY)
    chars = np.empty((len(numbers), len(head) + 7), dtype=np.uint8)
    chars[:, : len(head)] = head
    chars[:, len(head):] = _digit_bytes(numbers, 7)
    return _fixed_width_arrow(chars)


def _join_arrow(ids: list[np.ndarray], pool: pa.Array) -> pa.Array:
    """Row i is the concatenation of pool[ids[0][i]], pool[ids[1][i]], ..."""
    pieces = [pool.take(pa.array(i)) for i in ids]
    return pc.binary_join_element_wise(*pieces, pa.scalar("", pool.type))


def _join_obj(ids: list[np.ndarray]) -> np.ndarray:
    out = _POOL.obj[ids[0]]
    for i in ids[1:]:
        out = out + _POOL.obj[i]
    return out


def _choice(rng: np.random.Generator, options: list[str] | np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(options, dtype=object)
    return arr[rng.integers(0, len(arr), n)]


def _luhn_cards(rng: np.random.Generator, k: int) -> np.ndarray:
    payload = rng.integers(0, 10, (k, 15))
    payload[:, 0] = np.where(rng.random(k) < 0.7, 4, 5)  # Visa or Mastercard-like
    payload[:, 1] = np.where(payload[:, 0] == 5, rng.integers(1, 6, k), payload[:, 1])
    doubled = payload[:, ::-1].copy()  # rightmost payload digit first: it gets doubled
    doubled[:, ::2] *= 2
    doubled[doubled > 9] -= 9
    check = (10 - doubled.sum(axis=1) % 10) % 10
    digits = np.concatenate([payload, check[:, None]], axis=1)
    spaced = np.insert(digits, [4, 8, 12], 32, axis=1)  # '4111 1111 1111 1111'
    return np.where(rng.random(k) < 0.5, _digits_to_str(spaced), _digits_to_str(digits))


def _cn_ids(rng: np.random.Generator, k: int) -> np.ndarray:
    region = _CN_REGIONS[rng.integers(0, len(_CN_REGIONS), k)]
    days = rng.integers(0, 16800, k)  # born 1960-01-01 .. ~2005
    births = (np.datetime64("1960-01-01") + days.astype("timedelta64[D]")).astype(str)
    ymd = np.strings.replace(births, "-", "").astype("S8").view(np.uint8).reshape(k, 8).astype(np.int64) - 48
    body = np.concatenate([region, ymd, rng.integers(0, 10, (k, 3))], axis=1)
    check = _CN_ID_CHECK[(body * _CN_ID_WEIGHTS).sum(axis=1) % 11]
    return _digits_to_str(body) + check


def _pii_values(rng: np.random.Generator, kinds: np.ndarray) -> np.ndarray:
    """One PII value per row, of the kind named by ``kinds`` (index into _PII_KINDS)."""
    out = np.empty(len(kinds), dtype=object)
    for j, name in enumerate(_PII_KINDS):
        sel = np.flatnonzero(kinds == j)
        k = len(sel)
        if not k:
            continue
        if name == "email":
            num = np.where(rng.random(k) < 0.5, _ints_to_str(rng.integers(1, 1000, k)), "")
            values = _choice(rng, _EMAIL_USERS, k) + num + "@" + _choice(rng, _EMAIL_DOMAINS, k)
        elif name == "phone_us":
            area = _choice(rng, _US_AREAS, k)
            local = _ints_to_str(rng.integers(200, 1000, k)) + "-" + _ints_to_str(rng.integers(0, 10000, k), 4)
            style = rng.integers(0, 3, k)
            values = np.select([style == 0, style == 1], ["+1 " + area + "-" + local, "(" + area + ") " + local],
                               area + "-" + local)
        elif name == "phone_cn":
            values = _choice(rng, _CN_MOBILE, k) + _ints_to_str(rng.integers(0, 10**8, k), 8)
        elif name == "card":
            values = _luhn_cards(rng, k)
        elif name == "cn_id":
            values = _cn_ids(rng, k)
        else:  # ipv4
            octets = [_ints_to_str(rng.integers(0, 256, k)), _ints_to_str(rng.integers(0, 256, k)),
                      _ints_to_str(rng.integers(1, 255, k))]
            values = _choice(rng, _IP_FIRST, k) + "." + octets[0] + "." + octets[1] + "." + octets[2]
        out[sel] = values
    return out


_PII_WRAPS = _Lists([_PII_WRAP[lg][kind] for lg in (EN, ZH) for kind in _PII_KINDS])  # (prefix, suffix)
_PII_PREFIX = np.array([p for p, _ in _PII_WRAPS.items], dtype=object)
_PII_SUFFIX = np.array([s for _, s in _PII_WRAPS.items], dtype=object)


def _add_pii(rng: np.random.Generator, text: np.ndarray, lang: np.ndarray) -> np.ndarray:
    k = len(text)
    cum = np.cumsum(_PII_P, axis=1)[lang]
    kinds = np.minimum((rng.random(k)[:, None] > cum).sum(axis=1), len(_PII_KINDS) - 1)
    values = _pii_values(rng, kinds)
    pos = _PII_WRAPS.index(lang * len(_PII_KINDS) + kinds, rng.random(k))
    return text + _PII_PREFIX[pos] + values + _PII_SUFFIX[pos]


def _add_details(rng: np.random.Generator, text: np.ndarray, lang: np.ndarray, ds: np.datetime64) -> np.ndarray:
    """Numbers that are not PII and must survive masking: prices, dates, SKUs, quantities."""
    k = len(text)
    cents = rng.integers(199, 50000, k)
    was = cents // 100 + rng.integers(5, 60, k)
    yuan = rng.integers(9, 2000, k)
    qty = rng.integers(2, 6, k)
    sku = rng.integers(10000, 100000, k)
    back = rng.integers(1, 60, k)
    variant = rng.integers(0, 4, k)
    out = text.copy()
    for lg in (EN, ZH):
        for j in range(4):
            sel = np.flatnonzero((lang == lg) & (variant == j))
            if not len(sel):
                continue
            usd = "$" + _ints_to_str(cents[sel] // 100) + "." + _ints_to_str(cents[sel] % 100, 2)
            cny, n_items = "¥" + _ints_to_str(yuan[sel]), _ints_to_str(qty[sel])
            if j == 1 or (lg == ZH and j == 3):
                date = (ds - back[sel].astype("timedelta64[D]")).astype(str).astype(object)
            if lg == EN:
                extra = (" Paid " + usd + " for x" + n_items + "." if j == 0 else
                         " Order SKU-" + _ints_to_str(sku[sel]) + " placed on " + date + "." if j == 1 else
                         " Got it on sale for " + usd + " (was $" + _ints_to_str(was[sel]) + ".99)." if j == 2 else
                         " Bought " + n_items + " of them at " + usd + " each.")
            else:
                extra = ("买了" + n_items + "件，一共" + cny + "。" if j == 0 else
                         "订单号SKU-" + _ints_to_str(sku[sel]) + "，" + date + "下的单。" if j == 1 else
                         "活动价" + cny + "，买了x" + n_items + "。" if j == 2 else
                         date + "买的，" + cny + "两件。")
            out[sel] = text[sel] + extra
    return out


def _add_noise(rng: np.random.Generator, text: np.ndarray, lang: np.ndarray, sent: np.ndarray) -> np.ndarray:
    k = len(text)
    kind = rng.integers(0, len(_NOISE_KINDS), k)
    out = text.copy()
    for j, name in enumerate(_NOISE_KINDS):
        sel = np.flatnonzero(kind == j)
        if not len(sel):
            continue
        t, lg, m = text[sel], lang[sel], len(sel)
        if name in ("html", "entity"):
            wraps = _HTML_WRAP if name == "html" else _ENTITY_WRAP
            w = rng.integers(0, len(wraps), m)
            res = np.array([p for p, _ in wraps], dtype=object)[w] + t + np.array([s for _, s in wraps], dtype=object)[w]
        elif name == "link":
            res = t + np.where(lg == ZH, _choice(rng, _LINKS[ZH], m), _choice(rng, _LINKS[EN], m))
        elif name == "ad":
            res = t + np.where(lg == ZH, _choice(rng, _ADS[ZH], m), _choice(rng, _ADS[EN], m))
        elif name == "emoji":
            res = t + " " + _EMOJI_ITEMS[_EMOJI_LISTS.index(sent[sel], rng.random(m))]
        elif name == "fullwidth":
            wide = pd.Series(t, dtype=object).str.translate(_FULLWIDTH).to_numpy(dtype=object)
            res = np.where(lg == ZH, t + _choice(rng, _ZH_FULLWIDTH_TAIL, m), wide)
        else:  # whitespace
            spaced = pd.Series(t, dtype=object).str.replace(" ", "   ", regex=False).to_numpy(dtype=object)
            res = _choice(rng, ["  ", "\n", " \t ", ""], m) + spaced + _choice(rng, ["  \n\n ", "\t", "   ", "\r\n"], m)
        out[sel] = res
    return out


_EMOJI_LISTS = _Lists(list(_EMOJI))  # by mood
_EMOJI_ITEMS = np.array(_EMOJI_LISTS.items, dtype=object)
_RATING_VOCAB = ("0", "1", "2", "3", "4", "5", "6", "five", "four stars")
_RATING_WORD_CODES = np.array([7, 8, 7])  # 'five' twice as often as 'four stars'
_BAD_DATE_IDS = _POOL.ids(_BAD_DATES)
_POOL.freeze()
_ARROW_EMPTY = pa.scalar("", pa.large_string())
_ARROW_RATINGS = pa.array(_RATING_VOCAB, type=pa.large_string())


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def _check_share(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")
    return value


def _class_draw(rng: np.random.Generator, n: int, p: dict[int, float]) -> np.ndarray:
    cum = np.cumsum([p[c] for c in range(3)])
    return np.minimum(np.searchsorted(cum / cum[-1], rng.random(n), side="right"), 2).astype(np.int64)


def _str_column(values: pa.Array) -> pd.api.extensions.ExtensionArray:
    return pd.array(values, dtype="str")


def generate_reviews(
    n: int,
    *,
    seed: int = 7,
    ds: str = "2026-01-01",
    days: int = 1,
    zh_share: float = 0.3,
    bad_share: float = 0.02,
    pii_share: float = 0.03,
    noise_share: float = 0.05,
    duplicate_share: float = 0.01,
    drift: DriftSpec | None = None,
    id_prefix: str = "gen",
) -> pd.DataFrame:
    """A frame of ``n`` synthetic raw reviews; same arguments, same frame.

    Columns, exactly: review_id, product_id, product_name, product_category, rating, title, text,
    created_at, source. Text columns have pandas' ``str`` dtype (arrow-backed).

    - review_id ``f"{id_prefix}-{ds}-{i:07d}"``, unique except ``round(n * duplicate_share)`` rows
      that are exact copies of an earlier row (placed after it). source is ``"generated"``.
    - created_at: ``YYYY-MM-DDTHH:MM:SSZ`` strings within [ds - days + 1, ds] (UTC).
    - product_name is in the review's language (English or Chinese); product_category is an
      English key (electronics, home, beauty, books, food, clothing; smart_glasses under drift).
    - rating agrees with the text's hidden sentiment (1-2 negative, 3 mixed/neutral, 4-5 positive)
      except ~7% label noise; ~5% are missing; ~10% of titles are missing.
      **dtype**: nullable ``Int64`` when ``bad_share == 0``; otherwise a ``str`` column
      (``"4"``, missing, and the bad values ``"0"``, ``"6"``, ``"five"``, ``"four stars"``), since
      a raw export with bad ratings cannot be an integer column.
    - ``noise_share`` of rows carry HTML, entities, links, ads, emoji, full-width text or extra
      whitespace; ``pii_share`` carry one PII value (e-mail, US or Chinese phone, Luhn-valid card,
      Chinese ID with valid check digit, IPv4). ~10% of rows carry harmless numbers (prices,
      dates, SKU-xxxxx, quantities) that PII masking must keep.
    - ``bad_share`` of rows have exactly one defect a quality gate must catch: empty or blank
      text, rating 0/6 or a word, created_at unparseable or 30 days after ds, text over 6000
      characters, or emoji-only text.
    The bad, PII and noise rows are disjoint sets of the unique rows (``n - duplicates``), each of
    ``round(share * unique)`` rows; duplicates copy any earlier row, so they can repeat those too.
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    n = int(n)
    if isinstance(days, bool) or int(days) != days or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    days = int(days)
    try:
        day = np.datetime64(ds, "D")
    except ValueError as exc:
        raise ValueError(f"ds must be YYYY-MM-DD, got {ds!r}") from exc
    if str(day) != ds:
        raise ValueError(f"ds must be YYYY-MM-DD, got {ds!r}")
    zh_share = _check_share("zh_share", zh_share)
    bad_share = _check_share("bad_share", bad_share)
    pii_share = _check_share("pii_share", pii_share)
    noise_share = _check_share("noise_share", noise_share)
    duplicate_share = _check_share("duplicate_share", duplicate_share)
    if bad_share + pii_share + noise_share > 1.0:
        raise ValueError("bad_share + pii_share + noise_share must not exceed 1")
    drift = drift or DriftSpec()
    rng = np.random.default_rng(seed)

    n_dup = min(int(round(n * duplicate_share)), max(n - 1, 0))
    m = n - n_dup  # unique rows; everything below is per unique row until the final assembly

    # Who writes, about what, in which mood.
    if drift.language_shift:
        zh_share = _SHIFTED_MAJORITY if zh_share < 0.5 else 1.0 - _SHIFTED_MAJORITY
    lang = (rng.random(m) < zh_share).astype(np.int64)
    cum_w = np.cumsum(_OLD_WEIGHTS)
    product = _OLD_PRODUCTS[np.minimum(np.searchsorted(cum_w / cum_w[-1], rng.random(m), side="right"),
                                       len(_OLD_PRODUCTS) - 1)]
    if drift.new_category:
        new = rng.random(m) < _NEW_CATEGORY_SHARE
        product = np.where(new, _NEW_PRODUCTS[rng.integers(0, len(_NEW_PRODUCTS), m)], product)
    cat = _PROD_CAT[product]
    sent = _class_draw(rng, m, _FLIPPED_P if drift.sentiment_flip else _SENTIMENT_P)

    # Three aspects per review, all different.
    n_asp = _CAT_ASPECT_N[cat]
    i1 = (rng.random(m) * n_asp).astype(np.int64)
    i2 = (i1 + 1 + (rng.random(m) * (n_asp - 1)).astype(np.int64)) % n_asp
    i3 = (rng.random(m) * (n_asp - 2)).astype(np.int64)  # then skip over i1 and i2
    lo, hi = np.minimum(i1, i2), np.maximum(i1, i2)
    i3 += i3 >= lo
    i3 += i3 >= hi
    a1, a2, a3 = _CAT_ASPECTS[cat, i1], _CAT_ASPECTS[cat, i2], _CAT_ASPECTS[cat, i3]

    # Structure: opener clause1 <conn2> clause2 [<conn3> clause3] closer, polarities per mood:
    #   positive: pos and pos [and pos | but so-so]       (15%: so-so and pos)
    #   negative: neg and neg [and neg | though pos]      (15%: so-so and neg)
    #   neutral:  pos but neg (30%) | pos but so-so (20%) | so-so and so-so (35%) | neg though pos (15%)
    v = rng.random(m)
    w = rng.random(m)
    is_neg, is_neu, is_pos = sent == NEG, sent == NEU, sent == POS
    pol1 = np.select([is_neg, is_pos], [np.where(v < 0.15, NEU, NEG), np.where(v < 0.15, NEU, POS)],
                     np.where(v < 0.5, POS, np.where(v < 0.85, NEU, NEG)))
    kind2 = np.where(is_neu & (v < 0.5), _CONTRAST, np.where(is_neu & (v >= 0.85), _CONCEDE, _AND))
    pol2 = np.select([is_neg, is_pos], [NEG, POS], np.where(v < _NEU_HARD, NEG, np.where(v < 0.85, NEU, POS)))
    has3 = np.select([is_neu], [w < 0.25], w < 0.55)
    kind3 = np.select([is_neu, w < 0.30], [_AND, _AND], np.where(is_neg, _CONCEDE, _CONTRAST))
    pol3 = np.select([is_neu, w < 0.30], [NEU, sent], np.where(is_neg, POS, NEU))
    if drift.new_complaints:
        for pol, aspect in ((pol1, a1), (pol2, a2), (pol3, a3)):
            swap = (pol == NEG) & (rng.random(m) < _NEW_COMPLAINT_SHARE)
            aspect[swap] = _NEW_COMPLAINT_IDX

    # Openers and closers mostly match the mood, sometimes a neighbouring one ("Not bad." on a 4).
    blur, side = rng.random(m), rng.random(m)
    cue = np.where(blur < _CUE_BLUR, np.where(is_neu, np.where(side < 0.5, NEG, POS), NEU), sent)
    n_kinds = len(_EN_CONNECTORS)
    op = _OPENERS.index(lang * 3 + cue, rng.random(m))
    c1 = _CLAUSES.index(_clause_code(lang, pol1, a1), rng.random(m))
    k2 = _CONNECTORS.index(lang * n_kinds + kind2, rng.random(m))
    c2 = _CLAUSES.index(_clause_code(lang, pol2, a2), rng.random(m))
    k3 = _CONNECTORS.index(lang * n_kinds + kind3, rng.random(m))
    c3 = _CLAUSES.index(_clause_code(lang, pol3, a3), rng.random(m))
    cl = _CLOSERS.index(lang * 3 + cue, rng.random(m))
    pieces = [
        _OPENERS.ids[op],
        np.where(_OPENER_CAP[op], _CLAUSE_CAP_IDS[c1], _CLAUSES.ids[c1]),
        _CONNECTORS.ids[k2],
        np.where(_CONNECTOR_CAP[k2], _CLAUSE_CAP_IDS[c2], _CLAUSES.ids[c2]),
        np.where(has3, _CONNECTORS.ids[k3], _EMPTY),
        np.where(has3, np.where(_CONNECTOR_CAP[k3], _CLAUSE_CAP_IDS[c3], _CLAUSES.ids[c3]), _EMPTY),
        _CLOSERS.ids[cl],
    ]

    # Stars that agree with the mood, with label noise and gaps.
    rating = np.select([is_neg, is_neu], [np.where(rng.random(m) < 0.55, 1, 2), 3],
                       np.where(rng.random(m) < 0.4, 4, 5))
    flip = rng.random(m) < _LABEL_NOISE
    others = np.array([[3, 3, 4, 5], [1, 2, 4, 5], [1, 2, 3, 3]])
    rating = np.where(flip, others[sent, rng.integers(0, 4, m)], rating)
    rating_missing = rng.random(m) < _NULL_RATING

    title = _TITLE_TABLE.pick(lang * 3 + sent, rng.random(m))
    title = np.where(rng.random(m) < 0.15, _PROD_NAME_IDS[lang, product], title)
    title_missing = rng.random(m) < _NO_TITLE

    start = (day - np.timedelta64(days - 1, "D")).astype("datetime64[s]")
    seconds = rng.integers(0, days * 86400, m)

    # Extras on disjoint row sets; their texts are built as Python strings (a small share).
    n_bad, n_pii, n_noise = (int(round(m * s)) for s in (bad_share, pii_share, noise_share))
    order = rng.permutation(m)
    bad_rows = np.sort(order[:n_bad])
    pii_rows = np.sort(order[n_bad:n_bad + n_pii])
    noise_rows = np.sort(order[n_bad + n_pii:n_bad + n_pii + n_noise])
    detail = rng.random(m) < _DETAIL_SHARE
    detail[pii_rows[rng.random(n_pii) < 0.5]] = True
    detail[bad_rows] = False
    detail_rows = np.flatnonzero(detail)
    edited = np.zeros(m, dtype=bool)
    edited[detail_rows] = edited[pii_rows] = edited[noise_rows] = True
    edited_rows = np.flatnonzero(edited)  # text[edited_rows] is rewritten below, in this order
    text = _join_obj([p[edited_rows] for p in pieces])

    def at(rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(edited_rows, rows)

    text[at(detail_rows)] = _add_details(rng, text[at(detail_rows)], lang[detail_rows], day)
    text[at(pii_rows)] = _add_pii(rng, text[at(pii_rows)], lang[pii_rows])
    text[at(noise_rows)] = _add_noise(rng, text[at(noise_rows)], lang[noise_rows], sent[noise_rows])

    # 32-bit offsets join much faster; they hold 2 GiB of text, far more than 4M reviews need.
    text_type = pa.string() if n <= 4_000_000 else pa.large_string()
    pool = _POOL.arrow32 if text_type == pa.string() else _POOL.arrow

    rating_code = rating.copy()  # index into _RATING_VOCAB
    date_override = np.full(m, -1, dtype=np.int64)  # pool id of an unparseable created_at
    text_override: dict[int, tuple[np.ndarray, np.ndarray | pa.Array]] = {}  # bad rows: text replaced
    if n_bad:
        bad_kind = rng.integers(0, len(_BAD_KINDS), n_bad)
        for j, name in enumerate(_BAD_KINDS):
            rows = bad_rows[bad_kind == j]
            k = len(rows)
            if not k:
                continue
            if name == "empty_text":
                text_override[j] = (rows, np.full(k, "", dtype=object))
            elif name == "blank_text":
                text_override[j] = (rows, _choice(rng, _BLANKS, k))
            elif name == "rating_out_of_range":
                rating_code[rows] = np.where(rng.random(k) < 0.5, 0, 6)
                rating_missing[rows] = False
            elif name == "rating_word":
                rating_code[rows] = _RATING_WORD_CODES[rng.integers(0, len(_RATING_WORD_CODES), k)]
                rating_missing[rows] = False
            elif name == "created_unparseable":
                date_override[rows] = _BAD_DATE_IDS[rng.integers(0, len(_BAD_DATE_IDS), k)]
            elif name == "created_future":
                seconds[rows] = (days - 1 + 30) * 86400 + rng.integers(0, 86400, k)
            elif name == "long_text":  # built in arrow: no Python strings of 6000+ characters
                base = _join_arrow([p[rows] for p in pieces] + [np.full(k, _SPACE)], pool)
                repeats = _LONG_TEXT_MIN // pc.utf8_length(base).to_numpy() + 1
                text_override[j] = (rows, pc.binary_repeat(base, pa.array(repeats)))
            else:  # emoji_only
                text_override[j] = (rows, _choice(rng, _EMOJI_ONLY, k))

    # Final row order: each duplicate copies an earlier row and lands somewhere after it.
    if n_dup:
        src = rng.integers(0, m, n_dup)
        key = np.concatenate([np.arange(m, dtype=np.float64), src + 0.5 + np.floor(rng.random(n_dup) * (m - src))])
        final = np.concatenate([np.arange(m), src])[np.argsort(key, kind="stable")]
    else:
        final = np.arange(m)

    # Replacement texts, keyed by unique row, then mapped onto the final rows.
    repl_rows = np.concatenate([edited_rows] + [r for r, _ in text_override.values()])
    repl_vals = [pa.array(t, type=text_type, from_pandas=True) if isinstance(t, np.ndarray) else t
                 for t in [text] + [t for _, t in text_override.values()]]
    last = np.full(m, -1, dtype=np.int64)
    last[repl_rows] = np.arange(len(repl_rows))  # the row sets are disjoint
    hit = last[final]
    mask = hit >= 0
    final_pieces = [p[final] for p in pieces]
    if mask.any():  # replaced texts join the pool for this call; their other pieces are empty
        final_pieces[0][mask] = len(pool) + hit[mask]
        for p in final_pieces[1:]:
            p[mask] = _EMPTY
        pool = pa.concat_arrays([pool, *repl_vals])
    text_arrow = _join_arrow(final_pieces, pool)

    created_arrow = _timestamps_arrow(seconds[final], start)
    bad_date = date_override[final] >= 0
    if bad_date.any():
        created_arrow = pc.replace_with_mask(created_arrow, pa.array(bad_date),
                                             _POOL.arrow.take(pa.array(date_override[final][bad_date])))

    if bad_share > 0:
        rating_col = _str_column(_ARROW_RATINGS.take(pa.array(rating_code[final], mask=rating_missing[final])))
    else:
        rating_col = pd.arrays.IntegerArray(rating[final].astype(np.int64), rating_missing[final].copy())

    def pooled(ids: np.ndarray, missing: np.ndarray | None = None):
        return _str_column(_POOL.arrow.take(pa.array(ids, mask=missing)))

    frame = pd.DataFrame(
        {
            "review_id": _str_column(_review_ids_arrow(f"{id_prefix}-{ds}-", final)),
            "product_id": pooled(_PROD_ID_IDS[product[final]]),
            "product_name": pooled(_PROD_NAME_IDS[lang[final], product[final]]),
            "product_category": pooled(_CAT_IDS[cat[final]]),
            "rating": rating_col,
            "title": pooled(title[final], title_missing[final]),
            "text": _str_column(text_arrow),
            "created_at": _str_column(created_arrow),
            "source": pooled(np.full(n, _SOURCE_ID, dtype=np.int64)),
        },
        columns=COLUMNS,
    )
    return frame


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_reviews(df: pd.DataFrame, path: Path, fmt: str = "csv") -> Path:
    """Write ``df`` as csv | tsv | jsonl | parquet (UTF-8), atomically: a temporary file in the
    same folder, then ``os.replace`` onto ``path``. Returns ``path``."""
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(WRITE_FORMATS)}, got {fmt!r}")
    path = Path(path)
    with atomic_path(path) as tmp:  # hidden temporary file beside path, fsync, os.replace
        if fmt == "csv":
            df.to_csv(tmp, index=False, encoding="utf-8")
        elif fmt == "tsv":
            df.to_csv(tmp, index=False, sep="\t", encoding="utf-8")
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                df.to_json(fh, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False, engine="pyarrow")
    return path
