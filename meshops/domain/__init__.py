"""Values and rules that know nothing of clusters, clouds or processes."""
