"""Multi-object tracking: Kalman filters over boxes, the SORT and ByteTrack trackers, the CLEAR MOT
and identity metrics (MOTA, MOTP, IDF1), the MOTChallenge text format and synthetic sequences."""

from lamina.vision.tracking.assignment import limited_assignment
from lamina.vision.tracking.bytetrack import ByteTrack, TrackState
from lamina.vision.tracking.kalman import CHI2_INV_95, KalmanBoxFilter
from lamina.vision.tracking.mot_format import read_mot, track_sequence, tracks_to_mot, write_mot
from lamina.vision.tracking.mot_metrics import MOTAccumulator, evaluate_mot, format_mot_summary, mot_summary
from lamina.vision.tracking.sort import SORT
from lamina.vision.tracking.synthetic import synthetic_mot_scene

__all__ = [
    "CHI2_INV_95", "KalmanBoxFilter", "SORT", "ByteTrack", "TrackState", "limited_assignment",
    "MOTAccumulator", "evaluate_mot", "mot_summary", "format_mot_summary",
    "read_mot", "write_mot", "tracks_to_mot", "track_sequence", "synthetic_mot_scene",
]
