"""Stage `seed`: the seed instructions, from the bundled tasks, a file or a Hugging Face dataset."""
