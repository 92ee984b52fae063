#!/usr/bin/env bash
# Builds configs/plots/template.html: DVC's HTML page for `dvc plots show|diff` with vega,
# vega-lite and vega-embed inlined, so the page renders offline (DVC's default page loads
# them from a CDN and is blank without internet). .dvc/config points DVC at it
# (plots.html_template). The built file is committed: users need no npm; run this script
# (needs node + npm and the npm registry) only to change the versions below, which are the
# ones dvc-render's default page asks for.
set -euo pipefail
cd "$(dirname "$0")/.."
VEGA=5.20.2
VEGA_LITE=5.2.0
VEGA_EMBED=6.18.2
out=configs/plots/template.html
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "vega@$VEGA" "vega-lite@$VEGA_LITE" "vega-embed@$VEGA_EMBED" \
    >/dev/null)
for tgz in "$tmp"/*.tgz; do
    name=$(basename "$tgz" .tgz)
    mkdir -p "$tmp/$name" && tar -xzf "$tgz" -C "$tmp/$name"
done
python - "$tmp" "$out" "$VEGA" "$VEGA_LITE" "$VEGA_EMBED" <<'PY'
import json, sys
from pathlib import Path

tmp, out, versions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
libs, licenses = [], []
for name, version in zip(("vega", "vega-lite", "vega-embed"), versions, strict=True):
    pkg = tmp / f"{name}-{version}" / "package"
    meta = json.loads((pkg / "package.json").read_text())
    assert meta["version"] == version, (name, meta["version"])
    js = (pkg / "build" / f"{name}.min.js").read_text(encoding="utf-8")
    js = js.replace("</script", "<\\/script")  # cannot end the inline <script> early
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        assert placeholder not in js, (name, placeholder)
    text = (pkg / "LICENSE").read_text(encoding="utf-8").replace("--", "- -").strip()
    libs.append((name, version, meta.get("license", "?"), js))
    licenses.append(f"{name}@{version} LICENSE:\n{text}")
notice = "\n".join(f"  {n}@{v} (license {lic}, https://github.com/vega/{n})"
                   for n, v, lic, _ in libs)
notice += "\n\n" + "\n\n".join(licenses)
scripts = "\n".join(f'<script data-lib="{n}@{v}">\n{js}\n</script>' for n, v, _, js in libs)
HIDE_EMPTY = """<script data-lib="wizardcoder">
// DVC embeds every plot of dvc.yaml, and an empty spec ({}) for a plot whose data is empty (a
// feature that is off, e.g. evolve.verify or train.eval_fraction): hide that plot's place
// instead of drawing an empty chart.
(function () {
  var draw = window.vegaEmbed;
  window.vegaEmbed = function (el, spec, opt) {
    if (!spec || Object.keys(spec).length === 0) {
      var node = document.querySelector(el);
      if (node) { node.style.display = "none"; node.setAttribute("data-empty", "true"); }
      return Promise.resolve();
    }
    return draw(el, spec, opt);
  };
})();
</script>"""
page = f"""<!DOCTYPE html>
<!--
  DVC plots page that renders offline. Built by scripts/build_plots_template.sh from the npm
  packages below (BSD-3-Clause; copyright the Vega authors / University of Washington
  Interactive Data Lab), inlined unmodified except '</script' escaped:
{notice}
  DVC fills the plot_divs placeholder in the body. Do not edit by hand: rerun the script.
-->
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC plots (wizardcoder)</title>
{scripts}
{HIDE_EMPTY}
<style>
  body {{ font-family: sans-serif; margin: 16px; }}
  body > div {{ display: inline-block; vertical-align: top; margin: 8px 16px 24px 0; }}
  table {{ border-spacing: 15px; }}
</style>
</head>
<body>
<h2>wizardcoder: DVC plots</h2>
{{plot_divs}}
</body>
</html>
"""
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(page, encoding="utf-8")
print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): "
      + ", ".join(f"{n}@{v} {lic}" for n, v, lic, _ in libs))
PY
