"""A small, exact NeRF toolkit (Mildenhall et al. 2020, "NeRF: Representing Scenes as Neural
Radiance Fields for View Synthesis"), following the original code's conventions:

* :mod:`~lamina.vision.nerf.rays`: :func:`get_rays` of a pinhole camera (OpenGL axes, -z forward,
  directions not normalised), :func:`look_at` and :func:`spherical_pose` camera poses;
* :mod:`~lamina.vision.nerf.sampling`: :func:`stratified_samples` between near and far and the
  hierarchical :func:`sample_pdf` (inverse transform sampling of the coarse weights);
* :mod:`~lamina.vision.nerf.encoding`: :func:`positional_encoding` gamma(p);
* :mod:`~lamina.vision.nerf.rendering`: :func:`volume_render` and :func:`raw_to_outputs`;
* :mod:`~lamina.vision.nerf.scenes`: an exactly ray-traced scene of spheres
  (:func:`synthetic_nerf_scene`) and :mod:`~lamina.vision.nerf.blender`: the original
  ``transforms_*.json`` format (:func:`load_blender_scene`).

The networks and the coarse-to-fine renderer are in :mod:`lamina.models.nerf`.
"""

from lamina.vision.nerf.blender import load_blender_scene
from lamina.vision.nerf.encoding import encoding_frequencies, encoding_size, positional_encoding
from lamina.vision.nerf.rays import get_rays, look_at, spherical_pose
from lamina.vision.nerf.rendering import RenderOutputs, raw_to_outputs, sample_distances, volume_render
from lamina.vision.nerf.sampling import sample_pdf, stratified_samples
from lamina.vision.nerf.scenes import NeRFScene, SphereScene, synthetic_nerf_scene

__all__ = ["NeRFScene", "RenderOutputs", "SphereScene", "encoding_frequencies", "encoding_size", "get_rays",
           "load_blender_scene", "look_at", "positional_encoding", "raw_to_outputs", "sample_distances",
           "sample_pdf", "spherical_pose", "stratified_samples", "synthetic_nerf_scene", "volume_render"]
