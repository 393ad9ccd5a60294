"""What the browser tests share: window widths, a drag-and-drop of files, and the overflow measure."""

from __future__ import annotations

import base64

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
