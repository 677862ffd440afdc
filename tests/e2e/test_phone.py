"""The call on a phone (375 by 667 px) and on a wide screen: the header on one line, one row of
controls that covers no tile and no name, every tile reachable, tiles sized to the window,
viewers as small name plates, and the participant list that can be hidden."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tab, Tabs
from tests.openvidu_standin import OpenViduStandin

PHONE = {"width": 375, "height": 667}

# Boxes as the screen shows them: each clipped by the call's scrolling body.
BOXES = """() => {
  const box = (r) => ({ left: r.left, top: r.top, right: r.right, bottom: r.bottom });
  const body = document.querySelector("#call .call-body").getBoundingClientRect();
  const clip = (r) => ({
    left: Math.max(r.left, body.left), top: Math.max(r.top, body.top),
    right: Math.min(r.right, body.right), bottom: Math.min(r.bottom, body.bottom),
  });
  const shown = (selector) => [...document.querySelectorAll(selector)]
    .filter((e) => e.checkVisibility())
    .map((e) => ({
      what: e.dataset.participant || e.className || e.id, ...clip(e.getBoundingClientRect()),
    }))
    .filter((r) => r.right > r.left && r.bottom > r.top);
  return {
    controls: box(document.querySelector(".call-controls").getBoundingClientRect()),
    buttons: [...document.querySelectorAll(".call-controls button")]
      .filter((b) => b.checkVisibility()).map((b) => box(b.getBoundingClientRect())),
    covered: shown("#videos .tile, #videos .tile-label, #call-participants .chip"),
  };
}"""

# The element on top at the middle of each tile's name, after scrolling the tile into view.
NAME_ON_TOP = """(tile) => {
  tile.scrollIntoView({ block: "nearest" });
  const label = tile.querySelector(".tile-label").getBoundingClientRect();
  const body = tile.closest(".call-body").getBoundingClientRect();
  const x = (label.left + label.right) / 2;
  const top = document.elementFromPoint(x, (label.top + label.bottom) / 2);
  const t = tile.getBoundingClientRect();
  return {
    onTop: Boolean(top) && tile.contains(top),
    inside: t.top >= body.top - 0.5 && t.bottom <= body.bottom + 0.5,
  };
}"""


def meets(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two boxes share any area."""
    apart_x = a["right"] <= b["left"] or b["right"] <= a["left"]
    apart_y = a["bottom"] <= b["top"] or b["bottom"] <= a["top"]
    return not (apart_x or apart_y)


async def nothing_under_the_controls(page: Page) -> None:
    boxes = await page.evaluate(BOXES)
    covered = [item["what"] for item in boxes["covered"] if meets(item, boxes["controls"])]
    assert covered == []
    # One row: every button on the same line.
    assert len({round(b["top"]) for b in boxes["buttons"]}) == 1, boxes["buttons"]


async def tile_widths(page: Page) -> list[float]:
    widths: list[float] = await page.locator("#videos .tile:not([data-compact])").evaluate_all(
        "(tiles) => tiles.map((t) => t.getBoundingClientRect().width)"
    )
    return widths


async def widths_change(page: Page, before: list[float], timeout: float = 5.0) -> list[float]:
    """The tiles' widths once they differ from `before` (a resize lays them out again)."""
    async with asyncio.timeout(timeout):
        while (now := await tile_widths(page)) == before:
            # A layout has no event to await: look again after a frame or so.
            await page.wait_for_timeout(20)
    return now


async def full_room(lobby_http: str, tabs: Tabs, phone: Tab) -> None:
    """bob and mod publish in Standup, sub watches; the phone joins last."""
    for user, nickname in (("bob", "Bob"), ("mod", "Moderator")):
        tab = await tabs.login(lobby_http, user)
        await tab.create_room("Standup", nickname)
        await tab.in_call()
    viewer = await tabs.login(lobby_http, "sub")
    await viewer.create_room("Standup", "Viewer")
    await viewer.in_call()
    await phone.join_listed("Standup", "Alice")
    await phone.in_call()
    await expect(phone.page.locator("#videos .tile")).to_have_count(4)


async def test_the_call_fits_a_phone(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    phone = await tabs.login(lobby.http, "alice", viewport=PHONE)
    await full_room(lobby.http, tabs, phone)
    page = phone.page

    # The header on one line: every part of it beside the brand, at most 3.5rem high.
    header = await page.locator(".site-header-inner").evaluate(
        """(inner) => {
          const parts = [inner.querySelector(".brand"),
            ...inner.querySelectorAll(".header-tools > *")].filter((e) => e.checkVisibility());
          const boxes = parts.map((e) => e.getBoundingClientRect());
          const brand = boxes[0];
          return { height: inner.getBoundingClientRect().height, count: parts.length,
            sameLine: boxes.every((b) => b.top < brand.bottom && b.bottom > brand.top) };
        }"""
    )
    assert header["sameLine"], header
    assert header["count"] == 4  # the brand, the connection badge, who, Log out
    assert header["height"] <= 56
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    # The viewer is a name plate; the controls are icons, named by their words.
    await expect(page.locator("#videos .tile[data-compact]")).to_have_count(1)
    plate = await page.locator("#videos .tile[data-compact]").bounding_box()
    assert plate is not None
    assert plate["height"] <= 56
    await expect(page.get_by_role("button", name="Turn camera off")).to_be_visible()
    await expect(page.get_by_role("button", name="Leave call")).to_be_visible()
    label = await page.locator("#leave .btn-label").bounding_box()
    assert label is not None
    assert label["width"] <= 1  # only the icon shows

    await nothing_under_the_controls(page)
    for tile in await page.locator("#videos .tile").all():
        seen = await tile.evaluate(NAME_ON_TOP)
        assert seen == {"onTop": True, "inside": True}, await tile.get_attribute("data-tile")
        await nothing_under_the_controls(page)
    # The participant list, under the videos, is reachable too and never under the controls.
    last = page.locator("#call-participants .chip").last
    await last.scroll_into_view_if_needed()
    await expect(last).to_be_in_viewport()
    await nothing_under_the_controls(page)

    # Hiding the list: gone from the page, the button says it is collapsed.
    people = page.get_by_role("button", name="People")
    await people.click()
    await expect(people).to_have_attribute("aria-expanded", "false")
    await expect(page.locator("#call-participants")).to_be_hidden()
    await people.click()
    await expect(page.locator("#call-participants")).to_be_visible()
    await nothing_under_the_controls(page)


async def test_tiles_grow_and_shrink_with_the_number_of_people(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    wide = await tabs.login(lobby.http, "alice", viewport={"width": 1280, "height": 800})
    await wide.create_room("Standup", "Alice")
    await wide.in_call()
    [alone] = await tile_widths(wide.page)
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("Standup", "Bob")
    await bob.in_call()
    await expect(wide.page.locator("#videos .tile")).to_have_count(2)
    two = await widths_change(wide.page, [alone, alone])
    assert all(width < alone for width in two)
    # Everyone's tile fits the window: no scrolling needed for two.
    fits = await wide.page.locator("#call .call-body").evaluate(
        "(body) => [...body.querySelectorAll('.tile')].every((t) =>"
        " t.getBoundingClientRect().bottom <= body.getBoundingClientRect().bottom)"
    )
    assert fits
    # Hiding the participant list gives the videos the room.
    await wide.page.get_by_role("button", name="People").click()
    wider = await widths_change(wide.page, two)
    assert all(width >= before for width, before in zip(wider, two, strict=True))
    await bob.page.click("#leave")
    await expect(wide.page.locator("#videos .tile")).to_have_count(1)
    assert (await widths_change(wide.page, wider))[0] > wider[0]
