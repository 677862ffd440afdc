"""Browser tests: Playwright driving Debian Chromium against a real lobby and the stand-in."""
