"""Tasks (conf/task): the heads, how labels become targets, and the metrics of each."""
