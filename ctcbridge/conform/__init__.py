"""``ctcbridge conform``: the corpus, the signatures as rows, and the comparisons."""
