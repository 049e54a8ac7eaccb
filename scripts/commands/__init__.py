"""One module per `scalpscan` subcommand (see scripts/cli.py for the contract)."""
