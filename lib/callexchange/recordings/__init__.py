"""Recordings: reading FreePBX file names, durations from the audio, the incremental index
of the archive, and the find_phone_files lookup."""
