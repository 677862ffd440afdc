"""axe-core in the page: the accessibility rules (WCAG 2.1 A and AA, contrast included).

axe-core comes from the npm registry at the version `static/vendor.json` pins, fetched into
`static/vendor/` with the other browser libraries; the tests load it from the lobby's own
static files, so the page stays on this machine. axe's `color-contrast` rule passes over
disabled controls (WCAG exempts them); we hold them to AA too, with axe's own colour code.
"""

from __future__ import annotations

from playwright.async_api import Page

from lobby.web.assets import LIBRARIES

AXE = LIBRARIES["axe-core"]
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

RUN = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: { type: "tag", values: tags },
    resultTypes: ["violations"],
  });
  return result.violations.flatMap((v) =>
    v.nodes.map((n) => `${v.id}: ${n.target.join(" ")}: ${n.failureSummary}`));
}"""

# The same computation as axe's color-contrast rule, for disabled buttons it skips.
DISABLED = """() => {
  const { color } = axe.commons;
  axe.setup(document);
  try {
    const low = [];
    for (const button of document.querySelectorAll("button:disabled")) {
      if (!button.checkVisibility() || !button.textContent.trim()) continue;
      const background = color.getBackgroundColor(button, []);
      const foreground = color.getForegroundColor(button, false, background);
      if (!background || !foreground) {
        low.push(`${button.textContent.trim()}: colours not found`);
        continue;
      }
      const ratio = color.getContrast(background, foreground);
      if (ratio < 4.5) low.push(`${button.textContent.trim()}: ${ratio.toFixed(2)}`);
    }
    return low;
  } finally {
    axe.teardown();
  }
}"""


async def violations(page: Page) -> list[str]:
    """What axe-core finds wrong with the page as it is now, one line each."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(url=AXE.url)
    found: list[str] = await page.evaluate(RUN, TAGS)
    found += [f"disabled-contrast: {line}" for line in await page.evaluate(DISABLED)]
    return found
