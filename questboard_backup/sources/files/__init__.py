"""Files and config: canonical PAX tar streams of folders, restored through staging folders."""
