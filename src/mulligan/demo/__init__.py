"""`mulligan demo`: the story end to end on a small blog that simulated users keep writing to."""
