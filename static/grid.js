// The call's tiles sized from the window: as many people as fit without scrolling,
// as large as that allows, in 16:9; viewers without video get a small name plate
// instead (style.css `[data-compact]`). Below a floor the tiles stop shrinking and
// the call body scrolls, so every tile stays reachable and readable.

const RATIO = 16 / 9;
const MIN_WIDTH = 160; // px: a caption still fits
const COMPACT_ROW = 48 + 12; // px: a name plate's row and the gap (style.css)

let observer = null;
let latest = null;

/** Lay out `grid` for the room's `participants` now and whenever its space changes. */
export function layoutGrid(grid, participants) {
  latest = { grid, participants };
  if (!observer) {
    observer = new ResizeObserver(() => place(latest));
    observer.observe(grid.parentElement);
  }
  place(latest);
}

function place({ grid, participants }) {
  const viewers = new Set(participants.filter((p) => p.role === "SUBSCRIBER").map((p) => p.id));
  let large = 0;
  let compact = 0;
  for (const tile of grid.children) {
    const plate = viewers.has(tile.dataset.participant) && tile.dataset.video === "none";
    tile.toggleAttribute("data-compact", plate);
    if (plate) compact += 1;
    else large += 1;
  }
  const width = grid.clientWidth;
  const body = grid.parentElement;
  if (!width || !large) return; // hidden, or nothing but name plates
  const gap = parseFloat(getComputedStyle(grid).columnGap) || 0;
  const height = body.clientHeight - (compact ? COMPACT_ROW : 0);
  const best = tileWidth(large, width, height, gap);
  grid.style.setProperty("--tile-w", `${Math.floor(Math.max(best, Math.min(MIN_WIDTH, width)))}px`);
}

/** The largest 16:9 tile width that fits `count` tiles into width × height. */
export function tileWidth(count, width, height, gap) {
  let best = 0;
  for (let columns = 1; columns <= count; columns += 1) {
    const rows = Math.ceil(count / columns);
    const byWidth = (width - gap * (columns - 1)) / columns;
    const byHeight = ((height - gap * (rows - 1)) / rows) * RATIO;
    best = Math.max(best, Math.min(byWidth, byHeight));
  }
  return best;
}
