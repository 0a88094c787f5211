"""Object localization and detection (course notes, Object localization and detection):
bounding boxes, IoU and non-max suppression, a YOLO-style grid detector's targets, loss and
decoding, average precision and COCO's metrics; the sliding window done as a convolution (a classifier's
Dense head turned into convolutions), a small detection dataset of handwritten digits, and
DETR's Hungarian matching of a set of predictions to the objects; optical flow's loss, end-point
error, warping, colour coding and synthetic pairs (:mod:`lamina.vision.flow`); neural radiance fields' rays,
sampling, positional encoding, volume rendering and synthetic scenes (:mod:`lamina.vision.nerf`); multi-object
tracking with SORT and ByteTrack, MOTA / MOTP / IDF1 and the MOTChallenge format (:mod:`lamina.vision.tracking`);
top-down pose estimation's heatmap codecs and crops (:mod:`lamina.vision.pose_codecs`), PCK, OKS and keypoint
AP (:mod:`lamina.vision.pose_metrics`) and synthetic stick figures (:mod:`lamina.vision.pose_synthetic`)."""

from lamina.vision.anchors import AnchorGenerator, BoxCoder
from lamina.vision.boxes import box_area, center_to_corners, corners_to_center, iou, non_max_suppression
from lamina.vision.charset import CharsetMapper
from lamina.vision.coco_eval import COCO_AREA_RANGES, coco_evaluate, format_coco_metrics
from lamina.vision.degradations import (
    RealESRGANDegradation,
    anisotropic_gaussian_kernel,
    filter2d,
    gaussian_noise,
    generalized_gaussian_kernel,
    isotropic_gaussian_kernel,
    kernel_covariance,
    plateau_kernel,
    poisson_noise,
    random_blur_kernel,
    sinc_kernel,
)
from lamina.vision.detection import (
    Detections,
    decode_grid_predictions,
    encode_grid_targets,
    encode_grid_targets_batch,
    grid_detection_loss,
    localization_loss,
)
from lamina.vision.digit_captions import DIGIT_WORDS, digit_caption_vocabulary, digit_captions
from lamina.vision.flow import (
    endpoint_error,
    flow_to_color,
    make_colorwheel,
    sequence_loss,
    synthetic_flow_pairs,
    warp,
)
from lamina.vision.implicit_image import fit_image, image_coordinates
from lamina.vision.matching import HungarianMatcher, matching_cost
from lamina.vision.metrics import average_precision, mean_average_precision
from lamina.vision.nerf import (
    get_rays,
    load_blender_scene,
    positional_encoding,
    sample_pdf,
    stratified_samples,
    synthetic_nerf_scene,
    volume_render,
)
from lamina.vision.ocr_metrics import (
    character_error_rate,
    edit_distance,
    normalized_edit_distance,
    recognition_metrics,
    word_accuracy,
)
from lamina.vision.ops import (
    batched_nms,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
    nms,
    remove_small_boxes,
    sigmoid_focal_loss,
)
from lamina.vision.pose_codecs import (
    bbox_to_center_scale,
    decode_heatmaps,
    encode_heatmaps,
    fix_aspect_ratio,
    flip_heatmaps,
    gaussian_blur_heatmaps,
    get_warp_matrix,
    heatmap_maximum,
    transform_points,
    warp_affine,
)
from lamina.vision.pose_metrics import (
    COCO_KEYPOINT_AREA_RANGES,
    COCO_SIGMAS,
    coco_keypoint_evaluate,
    oks,
    pck,
)
from lamina.vision.pose_metrics import auc as pck_auc
from lamina.vision.pose_metrics import epe as keypoint_epe
from lamina.vision.pose_synthetic import STICK_FLIP_PAIRS, STICK_LIMBS, stick_figures
from lamina.vision.roi import MultiScaleRoIAlign, fpn_levels, roi_align, roi_pool, rois_from_boxes
from lamina.vision.scenes import digit_scenes
from lamina.vision.sliding import (
    all_window_count,
    convolutionalize,
    sliding_window_count,
    window_origins,
    window_stride,
)
from lamina.vision.style_transfer import style_transfer
from lamina.vision.super_resolution import DEGRADATIONS, sr_pairs
from lamina.vision.text_lines import TextLineDataset, collate_text_lines, synthetic_text_lines
from lamina.vision.tracking import (
    SORT,
    ByteTrack,
    KalmanBoxFilter,
    MOTAccumulator,
    evaluate_mot,
    mot_summary,
    read_mot,
    synthetic_mot_scene,
    track_sequence,
    write_mot,
)

__all__ = [
    "AnchorGenerator", "BoxCoder", "COCO_AREA_RANGES", "coco_evaluate", "format_coco_metrics",
    "HungarianMatcher", "matching_cost", "batched_nms", "box_convert", "box_iou", "clip_boxes_to_image",
    "complete_box_iou", "complete_box_iou_loss", "distance_box_iou", "distance_box_iou_loss", "generalized_box_iou",
    "generalized_box_iou_loss", "nms", "remove_small_boxes", "sigmoid_focal_loss",
    "Detections", "MultiScaleRoIAlign", "fpn_levels", "roi_align", "roi_pool", "rois_from_boxes",
    "all_window_count", "average_precision", "box_area", "center_to_corners", "convolutionalize",
    "corners_to_center", "decode_grid_predictions", "digit_scenes", "encode_grid_targets",
    "encode_grid_targets_batch", "grid_detection_loss", "iou", "localization_loss", "mean_average_precision",
    "non_max_suppression", "sliding_window_count", "window_origins", "window_stride",
    "endpoint_error", "flow_to_color", "make_colorwheel", "sequence_loss", "synthetic_flow_pairs", "warp",
]
__all__ += ["get_rays", "load_blender_scene", "positional_encoding", "sample_pdf", "stratified_samples",
            "synthetic_nerf_scene", "volume_render"]  # neural radiance fields (nerf)
__all__ += ["DEGRADATIONS", "sr_pairs", "style_transfer"]  # super-resolution pairs, neural style transfer
__all__ += ["RealESRGANDegradation", "anisotropic_gaussian_kernel", "filter2d", "gaussian_noise",
            "generalized_gaussian_kernel", "isotropic_gaussian_kernel", "kernel_covariance", "plateau_kernel",
            "poisson_noise", "random_blur_kernel", "sinc_kernel"]  # Real-ESRGAN degradations (degradations)
__all__ += ["SORT", "ByteTrack", "KalmanBoxFilter", "MOTAccumulator", "evaluate_mot", "mot_summary", "read_mot",
            "synthetic_mot_scene", "track_sequence", "write_mot"]  # multi-object tracking
__all__ += ["CharsetMapper", "TextLineDataset", "character_error_rate", "collate_text_lines", "edit_distance",
            "normalized_edit_distance", "recognition_metrics", "synthetic_text_lines",
            "word_accuracy"]  # text recognition: label conversion, synthetic lines, metrics
__all__ += ["fit_image", "image_coordinates"]  # images as functions of coordinates (implicit_image)
__all__ += ["DIGIT_WORDS", "digit_caption_vocabulary", "digit_captions"]  # a synthetic captioning task
__all__ += ["bbox_to_center_scale", "decode_heatmaps", "encode_heatmaps", "fix_aspect_ratio", "flip_heatmaps",
            "gaussian_blur_heatmaps", "get_warp_matrix", "heatmap_maximum", "transform_points", "warp_affine",
            "COCO_KEYPOINT_AREA_RANGES", "COCO_SIGMAS", "coco_keypoint_evaluate", "keypoint_epe", "oks", "pck",
            "pck_auc", "STICK_FLIP_PAIRS", "STICK_LIMBS", "stick_figures"]  # top-down pose: codecs, metrics, data
