"""One thin module per command of the CLI's stage table; a stage never imports another stage."""
