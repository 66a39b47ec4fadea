"""One module per subcommand: parse and validate, call the library, render the result."""
