"""The report page's inline stylesheet and script (no network, no external files).

The script only reads ``data-`` attributes of the gallery cards: ``data-score``,
``data-caption``, ``data-name`` and ``data-groups``. It never builds HTML from
data, so nothing in a caption can run as code.
"""

STYLE = """
:root { --ink: #1d2330; --muted: #5d6675; --line: #dde1e8; --panel: #ffffff;
        --page: #f3f5f8; --accent: #2f5fb3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--page); }
header { padding: 18px 28px 14px; background: var(--ink); color: #fff; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 4px 0 0; color: #c5cbd6; font-size: 13px; overflow-wrap: anywhere; }
main { padding: 8px 28px 40px; max-width: 1500px; }
section { margin-top: 22px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.note { color: var(--muted); margin: 0 0 10px; }
.alert { margin: 0 0 12px; padding: 8px 12px; border: 1px solid #e3a49e; border-radius: 8px;
         background: #fbefed; color: #8c1d18; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 12px; }
.tile { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
        padding: 10px 16px; min-width: 130px; }
.tile .label { display: block; color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.tile .value { display: block; font-size: 22px; font-weight: 600; }
.tile.bad .value { color: #b3261e; }
.columns { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
table { border-collapse: collapse; background: var(--panel); border: 1px solid var(--line); }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
table.facts th { background: none; color: var(--muted); font-weight: 500; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 12px;
                 overflow-wrap: anywhere; }
.controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin-bottom: 12px;
            background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
            padding: 8px 12px; }
.controls label { color: var(--muted); }
.controls input, .controls select { font: inherit; padding: 3px 6px; margin-left: 4px;
                                    border: 1px solid #b9c0cc; border-radius: 5px; }
.controls input { width: 220px; }
#shown { margin-left: auto; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(184px, 1fr)); gap: 12px; }
.card { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
        overflow: hidden; display: flex; flex-direction: column; }
.card[hidden] { display: none; }
.thumb { height: 160px; display: flex; align-items: center; justify-content: center;
         background: #e9ecf1; }
.thumb img { max-width: 100%; max-height: 160px; width: auto; height: auto; display: block; }
.thumb.small { width: 96px; height: 96px; }
.thumb.small img { max-height: 96px; }
.thumb.missing { flex-direction: column; gap: 4px; padding: 10px; text-align: center;
                 background: repeating-linear-gradient(45deg, #f6e3e1, #f6e3e1 8px,
                 #fbefed 8px, #fbefed 16px); color: #8c1d18; }
.thumb.missing strong { font-size: 13px; }
.thumb.missing small { font-size: 11px; overflow-wrap: anywhere; }
figcaption { padding: 8px 10px 10px; display: flex; flex-direction: column; gap: 4px; flex: 1; }
.caption { margin: 0; font-size: 14px; }
.meta { margin: 0; display: flex; flex-wrap: wrap; gap: 5px; align-items: center; }
.score { color: #fff; border-radius: 4px; padding: 0 6px; font-size: 12px;
         font-variant-numeric: tabular-nums; background: hsl(var(--hue, 210) 60% 38%); }
.tag { border: 1px solid var(--line); border-radius: 4px; padding: 0 5px; font-size: 11px;
       color: var(--muted); }
.uri { margin: 0; color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
details { font-size: 12px; color: var(--muted); }
details ol { margin: 4px 0 0; padding-left: 18px; }
ul.refs { margin: 0; padding-left: 16px; }
.empty { color: var(--muted); font-style: italic; }
td.file { white-space: nowrap; }
table caption { text-align: left; padding: 0 0 6px; color: var(--muted); }
"""

SCRIPT = """
(() => {
  const container = document.getElementById("cards");
  if (!container) return;
  const cards = Array.from(container.querySelectorAll(".card"));
  const filter = document.getElementById("filter");
  const sort = document.getElementById("sort");
  const group = document.getElementById("group");
  const shown = document.getElementById("shown");
  const noMatch = document.getElementById("no-match");
  // Cards without a usable score go last in either direction.
  const byScore = (direction) => (a, b) => {
    const x = Number(a.dataset.score), y = Number(b.dataset.score);
    if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);
    return direction * (x - y);
  };
  const orders = {
    "score-asc": byScore(1),
    "score-desc": byScore(-1),
    "name": (a, b) => a.dataset.name.localeCompare(b.dataset.name),
  };
  function applyFilter() {
    const query = filter.value.trim().toLowerCase();
    const wanted = group.value;
    let visible = 0;
    for (const card of cards) {
      const match = card.dataset.caption.toLowerCase().includes(query) &&
        (!wanted || card.dataset.groups.split(" ").includes(wanted));
      card.hidden = !match;
      visible += match ? 1 : 0;
    }
    shown.textContent = visible + " of " + cards.length + " shown";
    noMatch.hidden = visible > 0;
  }
  function applySort() {
    container.append(...cards.slice().sort(orders[sort.value]));
  }
  filter.addEventListener("input", applyFilter);
  group.addEventListener("change", applyFilter);
  sort.addEventListener("change", applySort);
  applySort();
  applyFilter();
})();
"""
