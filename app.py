"""CDK entry point (`npx cdk synth`, or `python app.py`): the Quest Board Backup stack from cdk.json."""

from __future__ import annotations

from infra.application import build_app


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
