"""The LVOS "unseen" videos: the 51 names of ``unseen_videos.txt`` in ``LingyiHongfd/lvos-evaluation`` (commit
25cb02d1455b5d0c964a9836ff5242fb51df55ee, the list its "update code for v2" commit introduced; the evaluator reads it
from its working directory, the LVOS download does not contain it).

The official tool scores a video as unseen when its name is in this list and as seen otherwise, for LVOS v1 and v2
alike (the 2022 list it replaced had 27 names). Facts about the benchmark, kept here as data, in the file's order.
"""

UNSEEN_VIDEOS: tuple[str, ...] = (
    "R3UJGYwy", "K3OUeINk", "058oeZ2p", "xpI7xRWN", "FiRTBMg2", "nfcT3owb", "JGG6MrhF", "yfzVCnvU", "6mNj04tC",
    "yWnanBID", "v3uNUctx", "49TNsJzk", "gw84JOqH", "711gAS21", "dtHbJvYy", "tAyQIobn", "vJ8W2TO5", "FmzvB44A",
    "8lxxCA5h", "N6CONZUW", "Oj1z5fO0", "gdqCcvs2", "LWVlKBlK", "yxCvN6OJ", "pMntJwSQ", "p9RjdKoh", "9NA8c5C3",
    "m37l7ti1", "nwflTTf1", "LY2zehlH", "beR0WT11", "afoR2rH6", "xQZlxhxV", "o36i3YWC", "cdzAjcuN", "IlvtT6D6",
    "YfoFnMgm", "FiQUhyRi", "9oLyy7aJ", "9RoNInYO", "wrrX6bxv", "q2HE4zaM", "rvwT3piq", "ZFqAoImI", "bwcKqVSN",
    "QE1wMR58", "eEcUJVBZ", "Qf9YVXOW", "SRRojucs", "PQfn7XV2", "3bvEjhOT",
)
