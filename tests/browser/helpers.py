"""What the browser tests share: window widths, a drag-and-drop of files, the overflow measure and a
walk over pages as their accounts."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable

SMALLEST, PHONE, DESKTOP = 360, 390, 1280

# Drops ``files`` (name, MIME type, base64 bytes) on the first upload area, as a drag from the desktop would.
DROP = """([selector, files]) => {
  const transfer = new DataTransfer();
  for (const [name, type, data] of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type }));
  }
  const zone = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def page_width_overflow(page) -> int:
    """How many CSS pixels the document is wider than the window (0 when it fits)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def visit_pages(
    signed_in, live_server, pages: Iterable[tuple[str | None, str]], width: int, height: int, lang: str, check: Callable
) -> None:
    """Open each (account, path) of ``pages`` in a ``width`` x ``height`` window in ``lang``, one context per
    account (signed in, language switched once), assert it answered 200, then call ``check(account, path, page)``.
    The contexts are closed however the walk ends."""
    contexts = {}
    try:
        for account, path in pages:
            if account not in contexts:
                contexts[account] = signed_in(account, viewport={"width": width, "height": height})
                contexts[account].new_page().goto(live_server(f"/lang/{lang}"))
            page = contexts[account].pages[0]
            response = page.goto(live_server(path))
            assert response.status == 200, (account, path, response.status)
            check(account, path, page)
    finally:
        for context in contexts.values():
            context.close()
