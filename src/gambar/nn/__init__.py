"""The only shared layers: every generator builds from these, none copies them."""
