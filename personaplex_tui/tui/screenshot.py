"""The command palette's Screenshot: an SVG of the screen in the Downloads folder, else ~/ppx-tui."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, SystemCommand


def screenshot_folder() -> Path:
    """The user's Downloads folder where there is one, else `~/ppx-tui` (where recordings go):
    Textual's own command saved to Downloads only, and a server without one got "Failed to save
    screenshot" with neither the reason nor the folder."""
    import platformdirs

    downloads = platformdirs.user_downloads_path()
    return downloads if downloads.is_dir() else Path.home() / "ppx-tui"


def save_screenshot(app: App) -> None:
    """Save the screen as an SVG and say where, or why not, in a notice."""
    folder = screenshot_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        saved = app.save_screenshot(path=str(folder))
    except OSError as err:
        reason = err.strerror or str(err)
        app.notify(f"Could not save the screenshot in {folder} ({reason}).", severity="error")
        return
    app.notify(f"Saved the screenshot as {saved}.")


def screenshot_command(app: App) -> SystemCommand:
    """The palette's Screenshot, once the palette has closed (it is not in the picture)."""
    return SystemCommand(
        "Screenshot",
        "Save an SVG picture of the screen in your Downloads folder (else ~/ppx-tui)",
        lambda: app.set_timer(0.1, lambda: save_screenshot(app)),
    )
