"""Picture in, ranked characters out: decoding, crops, embedding, index, confidence, gallery; no Discord here."""
