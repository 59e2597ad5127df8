"""Retake the README's screenshots of the demo pages.

Start the demo (``python manage.py demo``), then run ``python docs/screenshots/take.py``
(``--url`` if it is not on http://127.0.0.1:8000). Needs Playwright and the system Chromium
(``apt-get install chromium``). It only reads pages: it browses as ``ml1`` but rates nothing.
"""

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="1", help="MovieLens user number to browse as")
    parser.add_argument("--movie", default="50", help="id of the movie page to show")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(f"{args.url}/")
        page.get_by_label("User number").fill(args.user)
        page.get_by_role("button", name="Browse as").click()
        page.screenshot(path=str(HERE / "home.png"))
        page.goto(f"{args.url}/movies/{args.movie}/")
        page.screenshot(path=str(HERE / "movie.png"))
        browser.close()
    # 64 colours keep each file around 30 kB (Pillow comes with matplotlib).
    from PIL import Image

    for name in ("home.png", "movie.png"):
        image = Image.open(HERE / name).convert("RGB")
        image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(HERE / name, optimize=True)
    print(f"Wrote {HERE / 'home.png'} and {HERE / 'movie.png'}")


if __name__ == "__main__":
    main()
