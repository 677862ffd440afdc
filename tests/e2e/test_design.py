"""The pages at phone width, with the keyboard alone, and their labels and contrast."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tab, Tabs
from tests.openvidu_standin import OpenViduStandin

PHONE = {"width": 375, "height": 740}
# Text that must reach WCAG AA (4.5:1) against what is behind it, alpha included.
TEXT = (
    "h1, h2, h3, label, .help, .muted, .empty, .count, .badge, .who-name, .role-tag, .btn,"
    " .chip, .room-name, .room-count, .note, .alert, .call-status, .tile-label, .tile-you,"
    " .tile-status, .tile-avatar"
)
LOW_CONTRAST = """(selector) => {
  const parse = (css) => {
    const parts = css.match(/[\\d.]+/g).map(Number);
    return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  const behind = (element) => {
    const layers = [];
    for (let node = element; node; node = node.parentElement) {
      const color = parse(getComputedStyle(node).backgroundColor);
      if (color.a > 0) layers.push(color);
      if (color.a >= 1) break;
    }
    const white = { r: 255, g: 255, b: 255, a: 1 };
    return layers.reverse().reduce((under, top) => over(top, under), white);
  };
  const luminance = ({ r, g, b }) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const low = [];
  for (const element of document.querySelectorAll(selector)) {
    if (!element.checkVisibility() || !element.textContent.trim()) continue;
    const background = behind(element);
    const text = over(parse(getComputedStyle(element).color), background);
    const [light, dark] = [luminance(text), luminance(background)].sort((x, y) => y - x);
    const ratio = (light + 0.05) / (dark + 0.05);
    if (ratio < 4.5) low.push(`${element.className || element.tagName} ${ratio.toFixed(2)}`);
  }
  return low;
}"""


async def overflow(page: Page) -> int:
    """Pixels the page is wider than the viewport (a horizontal scrollbar)."""
    width: int = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


async def unlabelled(page: Page) -> list[str]:
    """Visible form fields without a label and buttons without a name."""
    found: list[str] = await page.evaluate(
        """() => [
          ...[...document.querySelectorAll("input:not([type=hidden])")]
            .filter((input) => input.labels.length === 0 && !input.getAttribute("aria-label"))
            .map((input) => input.outerHTML),
          ...[...document.querySelectorAll("button")]
            .filter((b) => b.checkVisibility())
            .filter((b) => !(b.getAttribute("aria-label") || b.textContent.trim()))
            .map((b) => b.outerHTML),
        ]"""
    )
    return found


async def tab_to(tab: Tab, selector: str, *, limit: int = 20) -> list[str]:
    """Press Tab until `selector` has the focus; what got the focus on the way."""
    visited: list[str] = []
    for _ in range(limit):
        await tab.page.keyboard.press("Tab")
        focused: str = await tab.page.evaluate(
            "(() => { const e = document.activeElement;"
            " return e.id || e.getAttribute('aria-label') || e.textContent.trim(); })()"
        )
        visited.append(focused)
        if await tab.page.locator(selector).evaluate("(e) => e === document.activeElement"):
            # Keyboard focus shows: the browser's :focus-visible, with our ring.
            assert await tab.page.evaluate(
                "document.activeElement.matches(':focus-visible')"
                " && getComputedStyle(document.activeElement).outlineStyle !== 'none'"
            )
            return visited
    pytest.fail(f"Tab never reached {selector}; focus went through {visited}")


async def focused_id(page: Page) -> str:
    element_id: str = await page.evaluate("document.activeElement.id")
    return element_id


async def test_a_phone_and_a_keyboard_are_enough(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("TUTORIAL", "Bob")
    await bob.in_call()
    phone = await tabs.login(lobby.http, "alice", viewport=PHONE)
    await expect(phone.card("TUTORIAL")).to_be_visible()
    assert await overflow(phone.page) == 0
    assert await unlabelled(phone.page) == []

    # The form first, then each room's Join; Enter joins; focus follows the view.
    visited = await tab_to(phone, 'button[aria-label="Join TUTORIAL"]')
    assert visited[-4:] == ["room-input", "nickname-input", "join-submit", "Join TUTORIAL"]
    await phone.page.keyboard.press("Enter")
    # The pre-join check: focus on its title, labelled controls, no overflow; Enter joins.
    await expect(phone.page.locator("#prejoin")).to_be_visible()
    assert await focused_id(phone.page) == "prejoin-title"
    await expect(phone.page.locator("#prejoin-camera option")).not_to_have_count(0)
    assert await overflow(phone.page) == 0
    assert await unlabelled(phone.page) == []
    await tab_to(phone, "#prejoin-join")
    await phone.page.keyboard.press("Enter")
    await phone.in_call()
    assert await focused_id(phone.page) == "call-title"
    await expect(phone.tile("local")).to_be_visible()
    await expect(phone.tile("remote")).to_be_visible()
    assert await overflow(phone.page) == 0
    assert await unlabelled(phone.page) == []
    await tab_to(phone, "#toggle-camera")
    await phone.page.keyboard.press("Enter")
    await expect(phone.page.locator("#toggle-camera")).to_have_text("Turn camera on")
    await tab_to(phone, "#leave")
    await phone.page.keyboard.press("Enter")
    await expect(phone.page.locator("#lobby-view")).to_be_visible()
    assert await focused_id(phone.page) == "lobby-title"


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_text_contrast_meets_wcag_aa(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs, scheme: str
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob", color_scheme=scheme)
    viewer = await tabs.login(lobby.http, "sub", color_scheme=scheme)
    await bob.create_room("TUTORIAL", "Bob")
    await bob.in_call()
    await bob.page.click("#toggle-camera")  # a "Camera off" status too
    await expect(viewer.card("TUTORIAL")).to_be_visible()
    await viewer.page.fill("#room-input", "not a room!")
    await viewer.page.click("#join-submit")  # an error message
    await expect(viewer.page.locator("#error")).not_to_be_empty()
    assert await viewer.page.evaluate(LOW_CONTRAST, TEXT) == []
    await viewer.join_listed("TUTORIAL", "Viewer")
    await viewer.in_call()
    await expect(bob.page.locator("#publish-note")).to_be_visible()
    for tab in (bob, viewer):
        assert await tab.page.evaluate(LOW_CONTRAST, TEXT) == []
    # Avatar colours depend on the participant id: try every one.
    tile = bob.tile("remote")
    for hue in range(8):
        await tile.evaluate("(tile, hue) => { tile.dataset.hue = String(hue); }", hue)
        assert await bob.page.evaluate(LOW_CONTRAST, ".tile-avatar") == [], hue
