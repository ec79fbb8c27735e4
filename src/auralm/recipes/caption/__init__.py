"""S2 caption: describe music tracks and playlists with an LM that cross-attends to several encoder branches."""
