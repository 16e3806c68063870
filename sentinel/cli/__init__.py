"""The command line: `main` wires the subcommands; one file per command."""
