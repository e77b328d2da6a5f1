"""Hugging Face Spaces entry point: build the app and serve it on port 7860."""

from assistants.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", "--host", "0.0.0.0"]))
