"""Print the settings table for the README (every key, its default and description)."""

from fbk_tasks.settings import PROJECT_ROOT, describe_settings


def main() -> None:
    print("| key | default | description |")
    print("| --- | --- | --- |")
    for key, default, description in describe_settings():
        default = default.replace(str(PROJECT_ROOT) + "/", "").replace("PosixPath(", "Path(")
        print(f"| `{key}` | `{default}` | {description.replace('|', '/')} |")


if __name__ == "__main__":
    main()
