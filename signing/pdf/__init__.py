"""PDF mechanics: reading uploads, PAdES signatures, seal images and stamps, pyHanko signers, a sample file."""
