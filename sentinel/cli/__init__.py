"""The command line: `main` wires the subcommands; one file per command."""

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2  # every command's exit codes (SPEC 2)
