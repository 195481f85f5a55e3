"""Write the HTML page template that lets `dvc plots show` work without internet.

    python scripts/offline-plots-template.py [OUTPUT]     (default: .dvc/offline-plots.html)

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so offline it stays blank. This
template inlines the three libraries instead: the JavaScript comes from the `vl-convert-python`
wheel (`vl_convert.javascript_bundle`, whose default snippet sets `window.vegaEmbed`, `window.vega`
and `window.vegaLite`), so no node or npm is needed. The template has DVC's `{plot_divs}`
placeholder and deliberately no `{scripts}` placeholder, which DVC would fill with the CDN tags.
`.dvc/config` points `plots.html_template` at the output (relative to `.dvc/`); the file is
git-ignored and written by `scripts/bootstrap.sh`.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import version
from pathlib import Path

import vl_convert

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / ".dvc" / "offline-plots.html"
# Placeholders that dvc_render substitutes with str.replace anywhere in the page.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega @VEGA@, vega-lite @VEGA_LITE@, vega-embed @VEGA_EMBED@: inlined from
         vl-convert-python @VL_CONVERT@ by scripts/offline-plots-template.py -->
    <script>
(() => {
@BUNDLE@
})();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def vega_lite_version() -> str | None:
    """The newest Vega-Lite 5.x in the wheel: DVC's plot specs declare the v5 schema."""
    fives = [v for v in vl_convert.get_vegalite_versions() if v.split(".")[0] == "5"]
    return max(fives, key=lambda v: tuple(int(p) for p in v.split("."))) if fives else None


def render() -> str:
    """The template's text: DVC's page layout with the three libraries inlined."""
    vl_version = vega_lite_version()
    bundle = vl_convert.javascript_bundle(vl_version=vl_version)
    if "window.vegaEmbed" not in bundle:
        raise RuntimeError("the vl-convert bundle no longer sets window.vegaEmbed")
    # The page wraps the bundle in a function, so that its top-level names (`t`, `n`, ...) stay
    # out of the global scope that DVC's inline `var spec = ...; vegaEmbed(...)` scripts share.
    # An inline script ends at the first "</script"; "<\/" means the same inside JS strings.
    bundle = bundle.replace("</script", "<\\/script")
    clashes = [p for p in DVC_PLACEHOLDERS if p in bundle]
    if clashes:
        raise RuntimeError(f"the bundle contains DVC placeholders {clashes}")
    substitutions = {
        "@VEGA@": vl_convert.get_vega_version(),
        "@VEGA_LITE@": vl_version or "default",
        "@VEGA_EMBED@": vl_convert.get_vega_embed_version(),
        "@VL_CONVERT@": version("vl-convert-python"),
        "@BUNDLE@": bundle,  # last: the bundle itself is not scanned for markers
    }
    page = PAGE
    for marker, value in substitutions.items():
        page = page.replace(marker, value)
    return page


def write(output: Path) -> bool:
    """Write the template to `output` atomically; return whether its content changed."""
    text = render()
    if output.is_file() and output.read_text(encoding="utf-8") == text:
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # open() honours the umask
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    changed = write(args.output)
    size = args.output.stat().st_size // 1024
    print(f"offline plots template: {args.output} ({size} KiB{'' if changed else ', unchanged'})")


if __name__ == "__main__":
    main()
