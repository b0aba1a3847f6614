"""The embedded demo world, so the whole pipeline runs offline without downloads."""
