"""Model builders: the classic small models and the architecture zoo (course notes, "CNN
architectures & applications").

Every zoo builder takes ``num_classes`` and ``input_shape`` (height, width, channels) and
returns an *unbuilt* model (weights are created on the first call or by
``model.build(model.input_shape)``); ``model.input_shape`` records (None, *input_shape).
Layouts follow the published models so that published weights map onto them:

* :func:`alexnet`, :func:`zfnet`: the course notes' tables; end with a softmax.
* :func:`vgg11` .. :func:`vgg19`, :func:`resnet18` .. :func:`resnet152`, :func:`googlenet`,
  :func:`inception_v3`: torchvision's layouts and names (outputs are logits, as
  torchvision's); :func:`load_torchvision_state_dict` loads torchvision weights.
* :func:`resnet_cifar`: He et al.'s CIFAR-10 ResNets (option A or B shortcuts).
* :func:`mobilenet`: MobileNet v1 in Keras's layout and names (ReLU6, alpha, rho); ends
  with a softmax.
* :func:`mobilenet_v2` (inverted residuals, linear bottlenecks) and :func:`densenet121` ..
  :func:`densenet201` (dense blocks): torchvision's layouts, names and parameter counts.
* :func:`resnext50_32x4d`, :func:`resnext101_32x8d`, :func:`resnext101_64x4d`,
  :func:`wide_resnet50_2`, :func:`wide_resnet101_2` (grouped or wider bottlenecks),
  :func:`squeezenet1_0`, :func:`squeezenet1_1` (Fire modules), :func:`shufflenet_v2_x0_5` ..
  :func:`shufflenet_v2_x2_0` (channel split and shuffle), :func:`mobilenet_v3_small`,
  :func:`mobilenet_v3_large` (squeeze-and-excitation, hard swish), :func:`efficientnet_b0` ..
  :func:`efficientnet_b7` (MBConv, compound scaling, stochastic depth),
  :func:`efficientnet_v2_s` .. :func:`efficientnet_v2_l` (FusedMBConv then MBConv stages),
  :func:`mnasnet0_5` .. :func:`mnasnet1_3` (searched inverted residual stacks) and
  :func:`convnext_tiny` .. :func:`convnext_large` (7x7 depthwise convs, LayerNorm, layer
  scale): torchvision's layouts, names and parameter counts; :func:`convnextv2_atto` ..
  :func:`convnextv2_tiny` (ConvNeXt V2: global response normalization, no layer scale).
* :class:`NFResNet` (:func:`nf_resnet18`, :func:`nf_resnet34`, :func:`nf_resnet_cifar`):
  normalizer-free ResNets (scaled weight standardization, scaled activations, analytic
  variance tracking; train them with :class:`lamina.optim.AGC`); :class:`NFNet`
  (:func:`nfnet_f0`, :func:`nfnet_f1`: NFNet-F, normalizer-free bottlenecks
  :class:`NFBottleneck` with grouped convolutions and squeeze-excite), and :class:`GhostNet`
  (:func:`ghostnet_1_0`: Ghost modules, 5,182,508 parameters).
* :class:`RepVGG` (:func:`repvgg_a0`, :func:`repvgg_a1`, :func:`repvgg_a2`, :func:`repvgg_b0`) and
  :class:`MobileOne` (:func:`mobileone_s0`, :func:`mobileone_s1`): structural re-parameterization,
  multi-branch blocks folded into single convolutions by :func:`reparameterize`.
* :func:`regnet_y_400mf` .. :func:`regnet_y_128gf`, :func:`regnet_x_400mf` ..
  :func:`regnet_x_32gf` (stage widths and depths generated from w_0, w_a, w_m: :func:`regnet`)
  and :func:`swin_t`, :func:`swin_s`, :func:`swin_b` (attention in shifted windows with a
  relative position bias, patch merging): torchvision's layouts, names and parameter counts.
* :func:`swin_v2_t`, :func:`swin_v2_s`, :func:`swin_v2_b` (scaled cosine attention, a bias
  from an MLP on log-spaced offsets, post-norm blocks) and :func:`maxvit_t` (MBConv, then
  attention in blocks and in a dilated grid): torchvision's layouts, names and parameter counts.
* :class:`CoAtNet` (:func:`coatnet_0`: MBConv stages, then transformer stages with a learned
  2-D relative attention bias) and :class:`LeViT` (:func:`levit_128s`: a convolutional stem,
  attention biases over (|dx|, |dy|), Linear + BatchNorm layers, shrinking attention, a
  distillation head averaged at inference).
* :func:`fcn_resnet50`, :func:`fcn_resnet101`, :func:`deeplabv3_resnet50`,
  :func:`deeplabv3_resnet101`: semantic segmentation on a dilated ResNet (FCN head, ASPP),
  torchvision's layouts, names and parameter counts.
* :func:`deeplabv3_plus_resnet50`, :func:`deeplabv3_plus_tiny` (:class:`DeepLabV3Plus`: ASPP at
  output stride 16 or 8, optionally atrous separable (:class:`SeparableASPP`), and
  :class:`DeepLabV3PlusDecoder` fusing stride-4 low-level features; :mod:`lamina.models.deeplabv3_plus`).
* :func:`pspnet_resnet50` (:func:`pspnet`, :func:`pspnet_small`): PSPNet, a pyramid pooling module
  (:class:`PyramidPooling`, bins 1, 2, 3, 6) on a dilated backbone, with an aux head (:func:`pspnet_loss`);
  :class:`UNetPlusPlus` (:func:`unet_plus_plus`): UNet++, nested dense skip pathways, deep supervision
  (:func:`unet_plus_plus_loss`) and pruning at inference.
* :func:`segnet_vgg16` (:class:`SegNet`, :func:`segnet_small`): SegNet, a VGG16 encoder and a decoder
  that max-unpools at the encoder's pooling indices; :func:`enet` (:class:`ENet`, :func:`enet_small`):
  ENet's initial block and regular, dilated, asymmetric, downsampling and upsampling bottlenecks.
* :func:`segformer` ('b0'..'b5'): SegFormer, a Mix Transformer encoder and an all-MLP decode
  head in Hugging Face's layout (:class:`SegformerForSemanticSegmentation`, logits at 1/4 of the
  input, :func:`segformer_loss`; weights from :func:`load_hf_segformer_state_dict`).
* :class:`Mask2Former`: segmentation by mask classification (masked-attention decoder over an
  FPN pixel decoder; :class:`MaskClassificationLoss`, :func:`semantic_inference`,
  :func:`panoptic_inference`).
* :class:`SOLOv2`: instance segmentation by grid locations with dynamic mask kernels
  (:func:`dynamic_mask_logits`, :func:`solo_targets`, :func:`matrix_nms`; :func:`solov2_tiny`,
  :func:`solov2_resnet50_fpn`).
* :class:`PointRendSemSeg`: PointRend, a coarse segmentation network refined at uncertain points
  by a :class:`PointHead` (:func:`point_sample`, :func:`uncertain_points_with_randomness`, adaptive
  subdivision; :func:`pointrend_from_segmentation` on FCN or DeepLabv3).
* :func:`unet`: U-Net for segmentation (per-pixel logits; 'same' or the paper's 'valid'
  padding); :func:`vit` and :func:`vit_b_16`: the Vision Transformer (patches, a class
  token, pre-norm encoder layers); :func:`vit_b_16`, :func:`vit_b_32`, :func:`vit_l_16`,
  :func:`vit_l_32`, :func:`vit_h_14` with torchvision's sizes and parameter counts.
* :func:`mixer_s32_224` .. :func:`mixer_l16_224` (:func:`mlp_mixer`: token- and channel-mixing
  MLPs), :func:`resmlp_12_224`, :func:`resmlp_24_224` (:func:`resmlp`: Affine norms, linear token
  mixing, layer scale), :func:`convmixer_768_32`, :func:`convmixer_1536_20`,
  :func:`convmixer_1024_20_ks9_p14` (:func:`convmixer`: depthwise and pointwise convolutions) and
  :func:`deit_tiny_patch16_224` .. :func:`deit_base_distilled_patch16_224` (:class:`DeiT`: a ViT
  with an optional distillation token; :func:`hard_distillation_loss`): timm's layouts, names and
  parameter counts; :func:`load_timm_state_dict` loads timm's weights.
* :func:`cait_xxs24`, :func:`cait_xxs36`, :func:`cait_s24`, :func:`cait_tiny` (:class:`CaiT`:
  LayerScale, talking-heads self-attention on the patches, then class attention that updates
  the class token only; :mod:`lamina.models.cait`).
* :func:`vim_tiny`, :func:`vim_small` (:class:`VisionMamba`: patch tokens and a middle class
  token through bidirectional Mamba blocks, :class:`VimBlock` of :class:`VimMixer`;
  :mod:`lamina.models.vision_mamba`); :class:`GatedCNNBlock`, MambaOut's Mamba block without
  the state-space model (:mod:`lamina.models.gated_cnn`).
* :func:`crossvit_9_240`, :func:`crossvit_tiny_240`, :func:`crossvit_tiny` (:class:`CrossViT`: two
  branches of small and large patches, :class:`MultiScaleBlock` with :class:`CrossAttentionFusion`
  of the class tokens; :mod:`lamina.models.crossvit`).
* :func:`rrdbnet_x4`, :func:`rrdbnet_tiny` (:class:`RRDBNet`, ESRGAN's generator of
  :class:`RRDB` blocks of :class:`ResidualDenseBlock`), :func:`esrgan_discriminator`,
  :func:`relativistic_discriminator_loss`,
  :func:`relativistic_generator_loss`, :func:`feature_l1_loss` (:mod:`lamina.models.esrgan`).
* :func:`pvt_v2_b0`, :func:`pvt_v2_b1`, :func:`pvt_v2_tiny` (:class:`PVTv2`: overlapping patch
  embeddings, :class:`SpatialReductionAttention`, the convolutional :class:`PVTv2FFN`, four-stage
  NHWC features; :mod:`lamina.models.pvt`) and :func:`cvt_13`, :func:`cvt_tiny` (:class:`CvT`:
  convolutional token embedding, :class:`ConvProjectionAttention`; :mod:`lamina.models.cvt`).
* :func:`beit_base_patch16_224`, :func:`beit_tiny` (:class:`BEiT`: relative position bias per
  layer, LayerScale, masked visual-token prediction with :func:`beit_block_masking`,
  :func:`beit_mim_loss`, :class:`PatchKMeansTokenizer`, :class:`VQVAETokenizer`) and
  :class:`SimMIM` (masked-pixel L1 regression, :func:`simmim_masks`, :func:`simmim_loss`):
  masked image modelling (:mod:`lamina.models.beit`, :mod:`lamina.models.simmim`).
* :func:`r3d_18`, :func:`mc3_18`, :func:`r2plus1d_18` (:func:`video_resnet`): video
  classifiers on NDHWC clips (3-D, mixed and (2+1)-D convolutions), torchvision's
  ``models.video`` layouts, names and parameter counts; :func:`s3d` (an Inception network
  of separable spatial + temporal convolutions) likewise.
* :class:`SlowFast` (:func:`slowfast_r50`, :func:`pack_pathways`: slow and fast pathways with
  lateral connections) and :class:`ViViT` (:func:`vivit_b_16x2_fe`: tubelet embedding, factorised
  encoder or factorised self-attention, :func:`inflate_patch_embedding`): video classifiers.
* :func:`rnn_language_model`, :func:`rnn_classifier`, :func:`transformer_language_model`:
  models of token ids (course notes, RNN, NLP); :class:`AttentionSeq2Seq`: the encoder-decoder
  with attention of the notes' translation model; :class:`ShowAttendTell`: Xu et al.'s image
  captioner with soft attention.
* :class:`TrOCR` (:func:`trocr_small`): a ViT encoder over patches of a text line and a
  Transformer decoder writing its text (cross-entropy, greedy or beam decoding).
* :class:`GPT2` (:func:`gpt2`) and :class:`BERT` / :class:`BertForMaskedLM` (:func:`bert`):
  Hugging Face's GPT2LMHeadModel, BertModel and BertForMaskedLM, with their parameter counts;
  :func:`load_hf_gpt2_state_dict` and :func:`load_hf_bert_state_dict` load their weights.
* :class:`ELECTRA` with :func:`electra_pretraining_loss` (a generator and a replaced-token
  discriminator sharing embeddings); :class:`DebertaEncoder` / :class:`DebertaForMaskedLM`
  (disentangled attention over relative positions, :func:`disentangled_attention`, and the
  enhanced mask decoder).
* :class:`AlbertModel`, :class:`AlbertForMaskedLM`, :class:`AlbertForPreTraining`: ALBERT's
  factorised embedding and cross-layer sharing, its sentence-order head (:func:`sop_pairs`,
  :func:`ngram_mask`, :func:`albert_pretraining_loss`); :func:`load_hf_albert_state_dict`.
* :class:`MedusaHeads`, :func:`medusa_loss`, :func:`medusa_generate`: Medusa's extra heads and
  greedy decoding that checks a tree of their guesses (:func:`medusa_tree`) in one call;
  :func:`typical_acceptance` and :func:`medusa_generate_batch` (several prompts at once).
* :class:`MultiTokenHeads`, :func:`multi_token_loss`, :class:`MTPModules`, :func:`mtp_loss`,
  :func:`self_speculative_generate`: multi-token prediction (Gloeckle et al.'s parallel heads,
  DeepSeek-V3's sequential modules) and greedy decoding drafted by the model's own extra heads.
* :func:`build_datastore`, :func:`knn_lm_log_probs`, :func:`knn_lm_perplexity`,
  :func:`knn_lm_generate`: kNN-LM (a language model interpolated with the next tokens of its
  nearest hidden states in a datastore of text, :class:`KNNDatastore`).
* :class:`AWDLSTM` (:func:`awd_lstm_ptb`, :func:`awd_lstm_wt2`, :func:`awd_lstm_tiny`): the
  weight-dropped LSTM language model with tied embeddings; :class:`ULMFiTClassifier` with
  :func:`concat_pool` (:mod:`lamina.models.awd_lstm`).
* :class:`RETRO` (:func:`retro`, :func:`retro_loss`): a decoder with chunked cross-attention
  (:class:`ChunkedCrossAttention`) to neighbours retrieved every m tokens from a
  :class:`RetroDatabase` (:func:`split_chunks`, :func:`retro_generate`).
* :class:`Llama` (:func:`llama`): Hugging Face's LlamaForCausalLM (rotary positions,
  grouped-query attention, RMSNorm, SwiGLU; TinyLlama, Llama 2 and Llama 3 sizes);
  :func:`load_hf_llama_state_dict` loads its weights. :class:`Mistral` (:func:`mistral`):
  Hugging Face's MistralForCausalLM, a Llama with sliding-window attention. Built on Llama
  too: :class:`Qwen2`, :class:`Gemma`, :class:`Gemma2`, :class:`Phi3` and :class:`Mixtral`
  (sparse mixture of experts); :class:`GPTNeoX` is Pythia's (parallel residual, partial
  rotary); each has its ``load_hf_*_state_dict``.
  :func:`load_gguf_llama` builds one from a llama.cpp GGUF file (quantized or not) and
  :func:`save_gguf_llama` writes one (:mod:`lamina.models.llama_gguf`).
* :class:`Mamba` (:func:`mamba`): Hugging Face's MambaForCausalLM, selective state-space
  layers (:class:`lamina.nn.MambaBlock`) decoding at constant cost per token;
  :func:`load_hf_mamba_state_dict` loads its weights. :class:`Mamba2LM`: Mamba-2 layers
  (:class:`lamina.nn.Mamba2Block`, the chunked state-space-duality scan).
* :class:`FastWeightLM`: a decoder on DeltaNet, Gated DeltaNet or gated linear attention layers
  (:class:`lamina.nn.DeltaNet`, :class:`lamina.nn.GatedDeltaNet`, :class:`lamina.nn.GatedLinearAttention`)
  with SwiGLU blocks, continuing from the mixers' states.
* :class:`Griffin` (:func:`griffin`) and :class:`Hawk` (:func:`hawk`): RG-LRU recurrent blocks
  (:class:`lamina.nn.RGLRU`) mixed with local multi-query attention (:class:`LocalMQAttention`),
  generating from a cached state; :func:`griffin_parameter_count`.
* :class:`T5` (:func:`t5`): Hugging Face's T5ForConditionalGeneration (relative position
  bias, v1.0 and v1.1 feed-forwards, greedy and beam generation with a key/value cache);
  :func:`load_hf_t5_state_dict` loads its weights.
* :class:`BartForConditionalGeneration` (:func:`bart`, :class:`BartModel`): Hugging Face's BART
  (learned positions with offset 2, post-norm layers, the LM head tied to the token table plus
  ``final_logits_bias``; greedy and beam generation with a key/value cache); its noising
  functions are in :mod:`lamina.data.text_noising`.
* :class:`Whisper` (:func:`whisper`): Hugging Face's WhisperForConditionalGeneration, a speech
  recognizer (log-mel features by :func:`whisper_log_mel_spectrogram`, greedy and beam
  generation with a key/value cache); :func:`load_hf_whisper_state_dict` loads its weights.
  :class:`WhisperSpecialTokens` (prompts, timestamp ids), :class:`WhisperTimestampRules`,
  :func:`timestamp_segments` and :func:`transcribe` (sequential long-form, 30 s windows, with
  temperature fallback, silence skipping, the previous text as prompt and word timestamps:
  :mod:`lamina.models.whisper_transcribe`, :mod:`lamina.models.whisper_alignment`).
* :class:`Wav2Vec2ForCTC` (:func:`wav2vec2`, 'base' and 'large-lv60'): Hugging Face's wav2vec 2.0
  with a CTC head on raw audio (:func:`wav2vec2_input_values`); :func:`load_hf_wav2vec2_state_dict`
  loads its weights, :func:`lamina.text.ctc_greedy_decode` and
  :func:`lamina.text.ctc_prefix_beam_search` decode its logits. :class:`Wav2Vec2ForPreTraining`
  (:func:`wav2vec2_pretraining`) adds the Gumbel quantizer and the contrastive and diversity
  losses, with SpecAugment masks (:func:`compute_mask_indices`), negatives
  (:func:`sample_negative_indices`) and the temperature schedule (:func:`gumbel_temperature`).
* :class:`Conformer` (:class:`ConformerLayer`): torchaudio's Conformer encoder over (batch, frames,
  dim) features with lengths; :class:`ConformerTransducer` adds an LSTM prediction network and a
  joiner, trained with :func:`lamina.functional.rnnt_loss` and read by greedy decoding.
* :class:`QuartzNet` (:func:`quartznet_5x5`, :func:`quartznet_15x5`, :func:`quartznet_tiny`): a
  convolutional CTC recogniser of time-channel separable convolutions (:class:`TCSConv1D`) in
  residual blocks (:class:`QuartzNetBlock`); Jasper's plain convolutions and dense residual as
  options (:func:`jasper_tiny`); :func:`greedy_transcribe` and :func:`word_error_rate`.
* :class:`CLIP` (:func:`clip`): Hugging Face's CLIPModel, an image tower and a text tower
  trained contrastively, with its parameter counts; :func:`load_hf_clip_state_dict` loads its
  weights and :func:`zero_shot_classifier` classifies images by the captions of class names.
  :class:`ResNetCLIP` (:func:`clip_resnet`: RN50, RN101, RN50x4) has OpenAI's ResNet image
  tower (:class:`ModifiedResNet`, :class:`AttentionPool2d`); :func:`load_openai_clip_state_dict`
  loads OpenAI's checkpoints (ResNet and ViT); :class:`CLIPImageProcessor` preprocesses images as
  CLIP's processor and :func:`zero_shot_classify` gives class probabilities in one call.
  :class:`SigLIP` (:func:`siglip`) trains CLIP's towers with the pairwise sigmoid loss and a
  learnable bias.
  :class:`CLAP` (:func:`clap`) pairs CLIP's text tower with an audio tower (a log-mel front end,
  :class:`LogMelFrontEnd`, and a CNN14-style :class:`CNN14Encoder` or any audio encoder);
  :func:`zero_shot_audio_classifier` and :func:`audio_text_retrieval` (recall@k) evaluate it.
* :class:`SkipGram`: Word2Vec's skip-gram with negative sampling, the notes' learned
  embedding matrix.
* :class:`GloVe`: global vectors fitted to a corpus's co-occurrence counts by weighted least
  squares (:func:`glove_loss`, :func:`glove_weights`) with AdaGrad.
* :class:`MaskedAutoencoderViT` (:func:`mae_vit_base_patch16` ..): masked autoencoders in the MAE
  reference's layout, with :class:`MAEClassifier` for fine-tuning and linear probing;
  :class:`DINOHead` and :class:`DINOLoss` for DINO self-distillation
  (:class:`lamina.train.DINOTrainer`), and DINOv2's additions: iBOT's masked patch
  self-distillation (:class:`MaskedViTEncoder`, :func:`block_masks`, :class:`IBOTLoss`),
  :func:`sinkhorn_knopp_centering` and :func:`koleo_loss` (:class:`lamina.train.DINOv2Trainer`);
  :class:`IJEPA` (:func:`multiblock_masks`) for I-JEPA's
  prediction of target-block representations (:class:`lamina.train.IJEPATrainer`).
  :class:`Data2Vec` (:class:`Data2VecImageEncoder`, :class:`Data2VecSequenceEncoder`,
  :class:`Data2VecDecoder`): data2vec's regression of an EMA teacher's averaged top-K block
  outputs at masked steps, on images or sequences, with data2vec 2.0's multiple masks.
* Recommenders: :class:`MatrixFactorization` (biased MF for ratings; :func:`als` for implicit
  feedback), :class:`GMF`, :class:`NCFMLP` and :class:`NeuMF` (neural collaborative filtering),
  :class:`TwoTower` (retrieval, in-batch softmax with the logQ correction) and :class:`DLRM`.
  Graph collaborative filtering (:mod:`lamina.models.lightgcn`): :class:`LightGCN` and
  :class:`NGCF` on :func:`normalized_adjacency`, trained with :func:`bpr_loss` by :func:`fit_bpr`,
  evaluated by :func:`full_ranking_metrics`.
  Click-through-rate models (:mod:`lamina.models.ctr`): :class:`DeepFM`, :class:`DCNv2` and
  :class:`DIN` (with the :class:`Dice` activation); (:mod:`lamina.models.ctr_more`)
  :class:`WideAndDeep`, :class:`AutoInt` (:class:`InteractingLayer`) and :class:`XDeepFM` (:class:`CIN`).
  Multi-task recommenders on the same inputs (:mod:`lamina.models.multitask_rec`):
  :class:`SharedBottom`, :class:`MMoE` and :class:`PLE` (with :class:`ExpertGroup`).
  Next-item recommenders (:mod:`lamina.models.sequential_rec`): :class:`GRU4Rec`, :class:`SASRec`
  (causal self-attention) and :class:`BERT4Rec` (cloze masking), trained by :func:`fit_sequential`.
* Knowledge-graph embeddings (:mod:`lamina.models.kge`): :class:`TransE`, :class:`DistMult`,
  :class:`ComplEx`, :class:`RotatE`, trained by :func:`fit_kge` (:func:`margin_ranking_loss`,
  :func:`self_adversarial_loss` on :func:`corrupt_triples`, :func:`one_to_n_loss`) and scored by
  filtered link prediction (:func:`evaluate_link_prediction`: MRR, Hits@k, realistic ties).
* Equivariant graph networks on point sets (:mod:`lamina.models.equivariant`): :class:`EGNN`
  (E(n)-equivariant layers, graph readout) and :class:`SchNet` (continuous-filter convolutions;
  energies and forces -dE/dx).
* :class:`P4CNN` (:func:`p4cnn`): a small p4 / p4m group-equivariant CNN whose logits are invariant
  to quarter turns (and mirrors) of the image (:mod:`lamina.nn.group_conv`).
* Sets and latent arrays: :class:`DeepSets`, :class:`SetTransformer` (ISAB/SAB encoder, PMA
  pooling; padding masks), :class:`Perceiver` and :class:`PerceiverIO` (cross-attention into a
  latent array, Fourier position features for images) and :class:`SlotAttentionAutoEncoder`
  (object discovery with :class:`lamina.nn.SlotAttention` and a spatial broadcast decoder).
* Metric-based few-shot learners over an episode's support set: :class:`MatchingNetwork`
  (cosine attention, full context embeddings :class:`SupportContextLSTM` and
  :class:`AttentionLSTM`) and :class:`RelationNetwork` (a learned relation module).
* :func:`grid_detector`: a small single-shot (YOLO-style) detector whose output volume
  :mod:`lamina.vision` decodes into boxes.
* :class:`FeaturePyramidNetwork` and :func:`resnet_fpn_backbone` (:class:`BackboneWithFPN`),
  :class:`RetinaNet` (:func:`retinanet_resnet50_fpn`) and :class:`FCOS`
  (:func:`fcos_resnet50_fpn`): one-stage detectors with torchvision's layouts, names, losses
  and parameter counts; ``model(images)`` detects, ``model(images, targets)`` gives the losses.
* :class:`EfficientDet` (:func:`efficientdet_d0`): BiFPN (:class:`BiFPNLayer`, fast normalised
  fusion) and separable class and box nets on EfficientNet features, trained as RetinaNet.
* :class:`CenterNet` (:func:`centernet_small`): anchor-free detection of objects as the peaks of
  class heatmaps (Gaussian targets, penalty-reduced focal loss, 3x3 max-pool decoding), in the
  same interface.
* :class:`YOLOX` (:func:`yolox_nano`, :func:`yolox_tiny`): an anchor-free YOLO (CSP-Darknet, PAFPN,
  decoupled head) trained with SimOTA label assignment, in the same interface.
* :class:`DETR` (:func:`detr_resnet50`): the detection transformer, a set of learned object
  queries matched one to one to the objects (Hungarian matching), in Facebook's layout.
* :class:`OWLViT`: open-vocabulary detection on a :class:`CLIP`, each image token a box scored
  against text (or image-region) query embeddings; :class:`OWLViTCriterion` (matching, focal or
  BCE and box losses), :func:`owlvit_postprocess`.
* :class:`CLIPSeg` (:func:`clipseg`): segmentation from text or image prompts, a small FiLM-conditioned
  transformer decoder (:class:`CLIPSegDecoder`) on a frozen :class:`CLIP`'s activations;
  :func:`clipseg_loss`, :func:`clipseg_segment`, :func:`visual_prompt_images`; other image sizes
  through :func:`clip_position_embedding` (the tower's position embeddings interpolated).
* :class:`FasterRCNN` (:func:`fasterrcnn_resnet50_fpn`, :func:`fasterrcnn_mobilenet_v3_large_fpn`
  on a :class:`MobileNetBackboneWithFPN`): the two-stage detector, a
  :class:`RegionProposalNetwork` and :class:`RoIHeads`, in the same interface;
  :class:`MaskRCNN` (:func:`maskrcnn_resnet50_fpn`) adds instance masks and
  :class:`KeypointRCNN` (:func:`keypointrcnn_resnet50_fpn`) keypoints.
* :class:`SSD` (:func:`ssd300_vgg16`, :func:`ssdlite320_mobilenet_v3_large`): single-shot
  detectors on default boxes with hard negative mining, in the same interface;
  :func:`lraspp_mobilenet_v3_large`: the LR-ASPP segmentation head on a dilated MobileNet v3.
* :class:`NeRF` (the original layout; :class:`TinyNeRF` for CPUs) and :class:`NeRFRenderer`: a
  neural radiance field rendered coarse then fine, trained by :func:`nerf_train_step`
  (rays, sampling and volume rendering in :mod:`lamina.vision.nerf`).
* :class:`NeuS`: a signed distance function and a colour network rendered with unbiased,
  occlusion-aware weights (:func:`neus_weights`), trained with the Eikonal loss (:func:`neus_train_step`).
* :class:`RAFT` (:func:`raft_large`, :func:`raft_small`, any size with :func:`raft`): optical
  flow by recurrent all-pairs field transforms in torchvision's layout (feature and context
  encoders, :class:`CorrBlock`'s correlation pyramid and lookup, :class:`UpdateBlock` with
  its ConvGRU, convex or bilinear upsampling); :mod:`lamina.vision.flow` has its loss,
  metrics and synthetic data.
* :class:`SuperGlue`: learned feature matching (keypoint encoder, attentional GNN of self-
  and cross-attention, log-space Sinkhorn with dustbins; :func:`superglue_loss`,
  :func:`superglue_match`, :func:`synthetic_matching_pairs`).
* :class:`NormalizingFlow`, :func:`realnvp`: densities by change of variables through
  invertible layers (:class:`AffineCoupling`, :class:`ActNorm`, :class:`Permute`,
  :class:`MaskedAutoregressive`), with exact ``log_prob`` and ``sample``; more layers:
  :class:`SplineCoupling`, :class:`SplineAutoregressive` (neural spline flows),
  :class:`PlanarFlow`, :class:`RadialFlow`, :class:`InverseAutoregressive`,
  :class:`BatchNormFlow`; :class:`Glow` for NHWC images and :class:`CNF` (FFJORD).
* :class:`DiffusionModel`: denoising diffusion (DDPM training, DDPM and DDIM sampling,
  classifier-free guidance) on a :class:`NoiseSchedule`, with the time-conditioned
  denoisers :class:`DenoisingMLP` (vectors), :class:`DenoisingUNet` and :class:`DiT` (the
  Diffusion Transformer, :func:`dit_s` .. :func:`dit_xl`) for NHWC images;
  :mod:`lamina.models.schedulers` has diffusers' schedulers (:class:`DPMSolverMultistepScheduler`,
  :class:`EulerDiscreteScheduler`, ...) for its ``sample(scheduler=...)``, and EDM
  (:class:`EDMPrecond`, :func:`edm_loss`, :func:`edm_sampler`).
* :class:`DiffWave` (:func:`diffwave_base`, :func:`diffwave_large`, :func:`diffwave_tiny`): the
  diffusion vocoder of raw waveforms, conditioned on mel frames or unconditional; L1 or L2
  noise-prediction loss, the full reverse process and fast sampling on a short variance
  schedule with its steps aligned to training's (:func:`align_steps`, :data:`FAST_SCHEDULE`).
* :class:`CrossAttentionUNet`: a :class:`DenoisingUNet` conditioned on a sequence (text) by
  :class:`SpatialCrossTransformer` blocks, Stable Diffusion's cross-attention.
* :class:`LatentDiffusion`: a diffusion model on the scaled latents of a frozen
  :class:`AutoencoderKL` (Stable Diffusion's KL autoencoder, :func:`estimate_scaling_factor`).
* :func:`progressive_distillation_loss` and :func:`grid_sample` (progressive distillation of a
  :class:`DiffusionModel` into few DDIM steps) and :class:`GuidanceDistilledDiffusion` with
  :class:`GuidanceDenoisingMLP` or :class:`GuidanceDenoisingUNet` (classifier-free guidance
  distilled into one net call).
* :class:`ConsistencyModel`: consistency models (training from data and distillation from a
  denoiser; one- and few-step sampling) and :class:`MaskGIT` (a bidirectional transformer over
  tokens with cosine-scheduled parallel decoding).
* :class:`VQGAN` (:func:`vqgan_tiny`): Taming Transformers' VQ autoencoder (residual blocks,
  GroupNorm, a :class:`NonLocalBlock` at the lowest resolution), trained with a perceptual and
  a PatchGAN loss (:func:`lamina.train.vqgan_loss`), and :class:`VQGANTransformer`, its
  autoregressive prior over the code indices.
* :class:`MultiStreamLM`: MusicGen's language model over K parallel codebook streams (the codes
  of an :class:`AudioCodec`) laid out by :func:`build_pattern` ('parallel', 'delay',
  'flatten'), with class conditioning and classifier-free guidance.
* :class:`FlowMatchingModel`: flow matching (conditional, Lipman's and minibatch optimal
  transport paths, rectified flow's reflow), sampled with :func:`lamina.odeint`.
* :class:`ScoreSDEMLP`: score-based generative modelling through SDEs (:class:`VPSDE`,
  :class:`subVPSDE`, :class:`VESDE`, :func:`score_sde_loss`), sampled by :func:`pc_sample`
  (predictor-corrector) or :func:`ode_sample` (probability-flow ODE), with exact likelihoods
  by :func:`ode_log_likelihood`.
* :func:`transfer`: a trained classifier repurposed for a new task (course notes, Transfer
  learning): new output layer, base frozen but for its last ``trainable`` layers.
* :class:`GaussianProcessRegressor`: exact Gaussian-process regression (Cholesky), its
  hyperparameters learned by maximizing the log marginal likelihood through autodiff, with
  the kernels of :mod:`lamina.models.kernels` (:class:`RBF`, :class:`Matern`,
  :class:`RationalQuadratic`, :class:`Periodic`, :class:`DotProduct`, :class:`White`,
  :class:`Constant`, :class:`ScaleKernel`, sums and products).
* :class:`SVGP`: the sparse variational GP (Hensman et al. 2013, whitened inducing points,
  minibatch ELBO); :class:`DeepKernel`: deep kernel learning (Wilson et al. 2016), a kernel on
  a network's features, trained through the exact marginal likelihood.
* Classical probabilistic models (:mod:`lamina.models.statespace`): :class:`HiddenMarkovModel`
  (forward-backward, Viterbi, Baum-Welch), :class:`KalmanFilter` (filter, RTS smoother,
  :func:`kalman_log_likelihood` for gradients), :class:`ParticleFilter` and
  :class:`GaussianMixture` (EM from k-means++, BIC/AIC).
* :class:`ConditionalNeuralProcess`, :class:`NeuralProcess`, :class:`AttentiveNeuralProcess`:
  neural processes (distributions over functions from context sets, the NP's ELBO, the ANP's
  self- and cross-attention), trained on :class:`GPCurves` tasks.
* :class:`PFN` (:func:`train_pfn`): prior-fitted networks (Müller et al. 2022), a Transformer
  trained on datasets from a prior (:mod:`lamina.data.pfn_priors`) that predicts in context;
  regression through the bar distribution (:func:`bar_log_density`, :class:`BarPrediction`).
* :class:`CapsNet` (:func:`capsnet_mnist`, :func:`capsnet_digits`): capsules routed by
  agreement (:class:`lamina.nn.DigitCapsules`), the margin loss and a masked reconstruction.
* :class:`FNO1D`, :class:`FNO2D`: Fourier neural operators (lifting, Fourier blocks of
  spectral convolutions, projection) mapping functions on periodic grids of any resolution.
* Physics-informed learning (:mod:`lamina.models.physics`): :class:`PINN` (input derivatives by
  :func:`derivative`, :func:`laplacian`; :class:`Poisson1D`, :class:`Heat1D`, :class:`Burgers1D`),
  :class:`DeepONet`, :class:`HamiltonianNN` and :class:`LagrangianNN`, with the symplectic
  integrators :func:`leapfrog` and :func:`symplectic_euler`.
* :class:`TCN`, :class:`NBEATS`, :class:`DLinear`, :class:`PatchTST` (:func:`tcn`, :func:`nbeats`,
  :func:`dlinear`, :func:`patchtst`): forecasters of (batch, input_length, channels) windows
  (:mod:`lamina.models.forecasting`).
* :class:`Autoformer`, :class:`Informer`, :class:`NHiTS`, :class:`TSMixer`: long-horizon forecasters of
  the same windows (:mod:`lamina.models.forecasting`).
* :class:`TimesNet` (2-D Inception convolutions over the series folded by its FFT periods) and
  :class:`ITransformer` (attention across variate tokens): forecasters of the same windows.
* :class:`TemporalFusionTransformer`: quantile forecasts from static, past and known-future inputs,
  with variable-selection and attention weights to explain them (:mod:`lamina.models.forecasting`).
* :class:`ChronosModel`: a T5 language model over mean-scaled, binned values
  (:class:`MeanScaleUniformBins`) giving sampled forecasts (:class:`ChronosGPT2Model`: its
  decoder-only variant); :func:`tsmixup` and :func:`kernel_synth` augment its training data
  (:mod:`lamina.models.forecasting`).
* :class:`DeepAR`: probabilistic forecasts from an autoregressive LSTM's Gaussian, Student-t or
  negative binomial likelihood, by ancestral sample paths (:mod:`lamina.models.forecasting`).
* :class:`RBM` (CD-k and persistent CD, pseudo-likelihood, exact and AIS log partition),
  :class:`HopfieldNetwork` (Hebbian and Storkey rules), :class:`SelfOrganizingMap` (Kohonen)
  and :class:`EchoStateNetwork` (a reservoir with a ridge read-out): classic energy-based,
  associative and reservoir models.
* :class:`Pix2PixGenerator` (the reference U-Net, "unet_256"), :class:`PatchGANDiscriminator`
  (70x70 PatchGAN, PixelGAN), :class:`ResnetGenerator` (CycleGAN's "resnet_9blocks") and
  StyleGAN2's blocks (:class:`EqualizedDense`, :class:`MappingNetwork`, :class:`ModulatedConv2D`,
  :class:`StyleGAN2Generator`); trained by :class:`lamina.train.Pix2PixTrainer` and
  :class:`lamina.train.CycleGANTrainer`.
* :class:`Rocket`, :class:`MiniRocket`, :class:`MultiRocket`, :class:`RocketClassifier`, :class:`FCN`,
  :class:`ResNet1D`, :class:`InceptionTime`: time-series classification (:mod:`lamina.models.tsc`).
* :class:`SINDy` (feature libraries, :class:`STLSQ`, :class:`SR3`, finite-difference and Savitzky-Golay
  derivatives), :class:`DMD` and :class:`HankelDMD` (exact DMD, optimal hard threshold) and
  :class:`KoopmanAutoencoder`: data-driven dynamics.
* :class:`NeuralCA` (grown by :func:`train_nca` with a sample pool and damage) and
  :class:`SelfClassifyingCA`: neural cellular automata (:mod:`lamina.models.nca`).
* :class:`LPIPS`: the learned perceptual image distance, calibrated on 2AFC judgements by
  :func:`train_lpips`, with the reference's lin weights read by :func:`load_lpips_weights`
  (:mod:`lamina.models.lpips`).
* :class:`DNC`: the differentiable neural computer (dynamic allocation, temporal links,
  :func:`memory_step` and its parts in :mod:`lamina.models.dnc_memory`).
* :class:`IWAE` (:func:`iwae_loss`, :func:`estimate_log_likelihood`): importance-weighted
  autoencoders, trained with the IWAE or the doubly reparameterized (DReG) gradient.
* :class:`LatentODE` and :class:`ODERNN` (with :class:`ODEFunc`): latent ODEs and ODE-RNNs for
  irregularly sampled time series (an ODE between observations, GRU jumps at them; masks).

``classifier_activation`` (None or an activation name) changes the output activation of
any builder. :func:`list_models`, :func:`get_model` and :func:`get_model_builder` find the
builders by name (:mod:`lamina.models.registry`).
"""

from lamina.models import kernels
from lamina.models.albert import (
    ALBERT_SHARING,
    AlbertForMaskedLM,
    AlbertForPreTraining,
    AlbertLayer,
    AlbertModel,
    AlbertPretrainingOutput,
    albert_parameter_count,
    albert_pretraining_loss,
    load_hf_albert_state_dict,
    ngram_mask,
    sop_pairs,
)
from lamina.models.alexnet import alexnet, zfnet
from lamina.models.audio_codec import AudioCodec, CodecOutput, CodecResidualUnit
from lamina.models.autoencoder import VAE, Autoencoder, ConvAutoencoder
from lamina.models.awd_lstm import AWDLSTM, ULMFiTClassifier, awd_lstm_ptb, awd_lstm_tiny, awd_lstm_wt2, concat_pool
from lamina.models.bar_distribution import (
    BarPrediction,
    bar_borders,
    bar_log_density,
    bar_mean,
    bar_quantiles,
    bar_tail_scales,
)
from lamina.models.bart import (
    BART_CONFIGS,
    BartAttention,
    BartDecoder,
    BartDecoderLayer,
    BartEncoder,
    BartEncoderLayer,
    BartForConditionalGeneration,
    BartModel,
    bart,
    shift_tokens_right,
)
from lamina.models.batchnorm_flow import BatchNormFlow
from lamina.models.beit import (
    BEiT,
    BEiTAttention,
    BEiTBlock,
    beit,
    beit_base_patch16_224,
    beit_relative_position_index,
    beit_tiny,
)
from lamina.models.beit_pretraining import (
    PatchKMeansTokenizer,
    VQVAETokenizer,
    beit_block_masking,
    beit_mask_blocks,
    beit_mim_loss,
)
from lamina.models.bert import (
    BERT,
    BertEmbeddings,
    BertForMaskedLM,
    BertLayer,
    bert,
    bert_parameter_count,
    load_hf_bert_state_dict,
)
from lamina.models.biggan import (
    BIGGAN_PRESETS,
    BigGANDiscriminator,
    BigGANGenerator,
    ProjectionHead,
    biggan_small,
    orthogonal_regularization,
    truncated_normal,
)
from lamina.models.bilstm_crf import BiLSTMCRF
from lamina.models.blocks import AdaptiveAvgPool2D, Block, BranchingNetwork, ConvBN
from lamina.models.cait import (
    CAIT_CONFIGS,
    CaiT,
    CaiTBlock,
    ClassAttention,
    ClassAttentionBlock,
    LayerScale,
    TalkingHeadsAttention,
    cait,
    cait_layer_scale_init,
    cait_s24,
    cait_tiny,
    cait_xxs24,
    cait_xxs36,
)
from lamina.models.capsnet import CapsNet, CapsNetOutput, capsnet_digits, capsnet_mnist
from lamina.models.causal import CFRNet, DragonNet, TARNet, representation_ipm, treatment_weights
from lamina.models.centernet import (
    CenterNet,
    CenterNetHead,
    centernet_decode,
    centernet_focal_loss,
    centernet_small,
    centernet_targets,
    draw_gaussian,
    gaussian_radius,
)
from lamina.models.clap import (
    CLAP,
    CLAPOutput,
    CNN14Block,
    CNN14Encoder,
    LogMelFrontEnd,
    audio_text_retrieval,
    clap,
    retrieval_recall_at_k,
    zero_shot_audio_classifier,
)
from lamina.models.classic import lenet5, logistic_regression, mlp
from lamina.models.clip import (
    CLIP,
    CLIPEncoderLayer,
    CLIPOutput,
    CLIPTextTransformer,
    CLIPVisionTransformer,
    ZeroShotClassifier,
    clip,
    clip_parameter_count,
    clip_tokenize,
    load_hf_clip_state_dict,
    zero_shot_classifier,
)
from lamina.models.clip_openai import load_openai_clip_state_dict
from lamina.models.clip_processing import CLIPImageProcessor, zero_shot_classify
from lamina.models.clip_resnet import AttentionPool2d, CLIPBottleneck, ModifiedResNet, ResNetCLIP, clip_resnet
from lamina.models.clipseg import (
    CLIPSeg,
    CLIPSegDecoder,
    clip_position_embedding,
    clipseg,
    clipseg_loss,
    clipseg_segment,
    visual_prompt_images,
)
from lamina.models.cnf import CNF, CNFDynamics, CNFResult
from lamina.models.coatnet import (
    COATNET_0,
    CoAtNet,
    CoAtNetRelativeAttention,
    CoAtNetTransformerBlock,
    coatnet_0,
    coatnet_tiny,
)
from lamina.models.concept_bottleneck import (
    DIGIT_CONCEPTS,
    ConceptBottleneck,
    digit_concepts,
    fit_concept_bottleneck,
    intervention_accuracy,
)
from lamina.models.conformer import Conformer, ConformerConvolution, ConformerFeedForward, ConformerLayer
from lamina.models.consistency import (
    CONSISTENCY_METRICS,
    ConsistencyModel,
    consistency_coefficients,
    consistency_times,
    ct_discretization_steps,
    ct_target_decay,
    gaussian_mixture_denoiser,
    ict_discretization_steps,
    lognormal_step_probabilities,
    pseudo_huber_distance,
)
from lamina.models.controlnet import ControlledDenoiser, ControlNet, DiTControlNet
from lamina.models.conv_tasnet import ChannelwiseLayerNorm, ConvTasNet, GlobalLayerNorm, TemporalConvBlock
from lamina.models.convmixer import (
    CONVMIXER_CONFIGS,
    ConvMixerResidual,
    convmixer,
    convmixer_768_32,
    convmixer_1024_20_ks9_p14,
    convmixer_1536_20,
)
from lamina.models.convnext import (
    ConvNeXtBlock,
    ConvNeXtV2Block,
    convnext,
    convnext_base,
    convnext_large,
    convnext_small,
    convnext_tiny,
    convnextv2_atto,
    convnextv2_femto,
    convnextv2_nano,
    convnextv2_pico,
    convnextv2_tiny,
)
from lamina.models.cpc import CPC, NEGATIVE_SOURCES, cpc_features, cpc_info_nce, cpc_negative_indices
from lamina.models.crnn import CRNN
from lamina.models.crossvit import (
    CROSSVIT_CONFIGS,
    CrossAttentionFusion,
    CrossViT,
    MultiScaleBlock,
    crossvit,
    crossvit_9_240,
    crossvit_tiny,
    crossvit_tiny_240,
)
from lamina.models.ctr import DIN, DCNv2, DeepFM, Dice, fm_interaction
from lamina.models.ctr_more import CIN, AutoInt, InteractingLayer, WideAndDeep, XDeepFM
from lamina.models.cvt import CVT_CONFIGS, ConvEmbed, ConvProjectionAttention, CvT, CvTBlock, cvt, cvt_13, cvt_tiny
from lamina.models.cyclegan import ResnetBlock, ResnetGenerator
from lamina.models.data2vec import (
    Data2Vec,
    data2vec_loss,
    data2vec_random_masks,
    data2vec_span_masks,
    data2vec_targets,
    instance_norm_over_time,
)
from lamina.models.data2vec_encoders import (
    Data2VecDecoder,
    Data2VecImageEncoder,
    Data2VecSequenceEncoder,
    sincos_1d_position_embedding,
)
from lamina.models.deberta import (
    DebertaEncoder,
    DebertaForMaskedLM,
    DebertaLayer,
    disentangled_attention,
    relative_position_buckets,
)
from lamina.models.deep_kernel import DeepKernel
from lamina.models.deeplabv3_plus import (
    DeepLabV3Plus,
    DeepLabV3PlusDecoder,
    SeparableASPP,
    deeplabv3_plus,
    deeplabv3_plus_resnet50,
    deeplabv3_plus_tiny,
)
from lamina.models.deepsurv import DeepSurv
from lamina.models.deformable_detr import (
    DeformableDETR,
    DeformableDetrConvBackbone,
    DeformableDetrCriterion,
    DeformableDetrDecoderLayer,
    DeformableDetrEncoderLayer,
    DeformableDetrResNetBackbone,
    DeformableDetrTransformer,
    deformable_detr_resnet50,
    deformable_detr_small,
    deformable_position_encoding,
    focal_matching_cost,
    inverse_sigmoid,
    refine_boxes,
)
from lamina.models.deit import (
    DEIT_CONFIGS,
    DeiT,
    DeiTAttention,
    DeiTBlock,
    FusedQKVAttention,
    deit,
    deit_base_distilled_patch16_224,
    deit_base_patch16_224,
    deit_small_distilled_patch16_224,
    deit_small_patch16_224,
    deit_tiny_distilled_patch16_224,
    deit_tiny_patch16_224,
    hard_distillation_loss,
)
from lamina.models.densenet import DenseBlock, DenseLayer, densenet, densenet121, densenet169, densenet201
from lamina.models.deq import DEQMLP, ContractiveCell, ContractiveConvCell, DEQConvNet
from lamina.models.detector import grid_detector
from lamina.models.detr import (
    DETR,
    DetrAttention,
    DetrBackbone,
    DetrDecoderLayer,
    DetrEncoderLayer,
    DetrMLP,
    DetrTransformer,
    SetCriterion,
    detr_resnet50,
    sine_position_encoding,
)
from lamina.models.dgcnn import DGCNN, EdgeConv, edge_features
from lamina.models.diffusion import (
    DenoisingMLP,
    DenoisingUNet,
    DiffusionModel,
    NoiseSchedule,
    TimeResidualBlock,
    make_schedule,
    timestep_embedding,
)
from lamina.models.diffusion_cross_attention import CrossAttentionUNet, SpatialCrossTransformer
from lamina.models.diffwave import (
    DIFFWAVE_CONFIGS,
    DiffusionStepEmbedding,
    DiffWave,
    DiffWaveResidualLayer,
    SpectrogramUpsampler,
    diffwave_base,
    diffwave_large,
    diffwave_step_features,
    diffwave_tiny,
)
from lamina.models.diffwave_sampling import DIFFWAVE_LOSSES, FAST_SCHEDULE, align_steps
from lamina.models.dino import DINOHead, DINOLoss, dino_cross_entropy
from lamina.models.dinov2 import koleo_loss, sinkhorn_knopp_centering
from lamina.models.discrete_diffusion import (
    D3PM,
    DiscreteDiffusionLM,
    MaskedDiffusion,
    d3pm_betas,
    d3pm_transition_matrix,
    subs_log_probs,
)
from lamina.models.dit import DIT_CONFIGS, DiT, DiTBlock, dit_b, dit_l, dit_s, dit_xl
from lamina.models.dlrm import DLRM, dot_interaction
from lamina.models.dmd import DMD, HankelDMD, optimal_svht_coefficient, svd_rank
from lamina.models.dnc import DNC, DNCState
from lamina.models.dnc_memory import (
    DNCMemoryState,
    allocation_weighting,
    content_weighting,
    interface_size,
    link_update,
    memory_step,
    oneplus,
    parse_interface,
    temporal_weightings,
    usage_update,
)
from lamina.models.early_exit import EarlyExitNetwork, EarlyExitResult
from lamina.models.ecapa import ECAPA_TDNN, Res2NetBlock1D, SEBlock1D, SERes2NetBlock
from lamina.models.efficientdet import (
    BiFPN,
    BiFPNLayer,
    EfficientDet,
    EfficientDetHead,
    EfficientNetFeatures,
    efficientdet_d0,
    efficientdet_tiny,
    fast_normalized_fusion,
)
from lamina.models.efficientnet import (
    FusedMBConv,
    MBConv,
    efficientnet,
    efficientnet_b0,
    efficientnet_b1,
    efficientnet_b2,
    efficientnet_b3,
    efficientnet_b4,
    efficientnet_b5,
    efficientnet_b6,
    efficientnet_b7,
    efficientnet_v2,
    efficientnet_v2_l,
    efficientnet_v2_m,
    efficientnet_v2_s,
)
from lamina.models.electra import (
    ELECTRA,
    ElectraPretrainingOutput,
    electra_pretraining_loss,
    random_token_mask,
    replaced_token_labels,
)
from lamina.models.enet import (
    ENET_KINDS,
    ENET_MIDDLE_PATTERN,
    ENet,
    ENetBottleneck,
    ENetDownsampling,
    ENetInitialBlock,
    ENetUpsampling,
    enet,
    enet_small,
)
from lamina.models.equivariant import EGNN, SchNet
from lamina.models.esrgan import (
    RRDB,
    ResidualDenseBlock,
    RRDBNet,
    esrgan_discriminator,
    feature_l1_loss,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
    rrdbnet_tiny,
    rrdbnet_x4,
)
from lamina.models.fast_weight_lm import FAST_WEIGHT_MIXERS, FastWeightLM
from lamina.models.faster_rcnn import FasterRCNN, fasterrcnn_resnet50_fpn
from lamina.models.fastspeech2 import (
    FastSpeech2,
    FFTBlock,
    LengthRegulator,
    PostNet,
    VarianceAdaptor,
    VariancePredictor,
    fastspeech2_loss,
    frame_energy,
)
from lamina.models.fcos import FCOS, FCOSHead, fcos_resnet50_fpn
from lamina.models.flamingo import Flamingo, GatedCrossAttentionBlock, PerceiverResampler, media_attention_mask
from lamina.models.flexivit import (
    patch_resize_matrix,
    pi_resize_matrix,
    resize_patch_embedding,
    resize_position_embedding,
)
from lamina.models.flow_matching import FlowMatchingModel, flow_matching_loss, reflow_pairs, straightness
from lamina.models.flow_matching_ot import optimal_assignment, sinkhorn, squared_distances, wasserstein2
from lamina.models.flow_matching_paths import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
    TargetConditionalFlowMatcher,
    make_matcher,
)
from lamina.models.flows import (
    ActNorm,
    AffineCoupling,
    FlowLogProb,
    InvertibleLayer,
    MaskedAutoregressive,
    NormalizingFlow,
    Permute,
    Reverse,
    density_nll,
    realnvp,
)
from lamina.models.fno import FNO1D, FNO2D, grid_coordinates
from lamina.models.forecasting import (
    NBEATS,
    TCN,
    Autoformer,
    ChronosForecast,
    ChronosGPT2Model,
    ChronosModel,
    DeepAR,
    DeepARForecast,
    DLinear,
    GatedResidualNetwork,
    InceptionBlock2D,
    Informer,
    InterpretableMultiHeadAttention,
    ITransformer,
    MeanScaleUniformBins,
    NBeatsBlock,
    NHiTS,
    PatchTST,
    StaticCovariateEncoder,
    TemporalBlock,
    TemporalFusionTransformer,
    TimesBlock,
    TimesNet,
    TSMixer,
    VariableSelectionNetwork,
    auto_correlation,
    autoformer,
    dlinear,
    fft_periods,
    fold_periods,
    fourier_basis,
    full_attention,
    gaussian_log_prob,
    informer,
    item_scale,
    itransformer,
    kernel_synth,
    linear_interpolation_matrix,
    moving_average_matrix,
    nbeats,
    negative_binomial_log_prob,
    nhits,
    patchtst,
    polynomial_basis,
    prob_sparse_attention,
    query_sparsity,
    sample_gaussian_process,
    series_decomposition,
    student_t_log_prob,
    tcn,
    tcn_receptive_field,
    tft,
    time_delay_correlation,
    timesnet,
    tsmixer,
    tsmixup,
    unfold_periods,
)
from lamina.models.fpn import (
    BackboneWithFPN,
    FeaturePyramidNetwork,
    FrozenBatchNorm2D,
    LastLevelMaxPool,
    LastLevelP6P7,
    resnet_fpn_backbone,
)
from lamina.models.ft_transformer import FTTransformer, reglu
from lamina.models.gan import dcgan_discriminator, dcgan_generator
from lamina.models.gated_cnn import GatedCNNBlock
from lamina.models.gaussian_image import GaussianImage
from lamina.models.gaussian_process import GaussianProcessRegressor
from lamina.models.gemma import (
    GEMMA2_CONFIGS,
    GEMMA_CONFIGS,
    Gemma,
    Gemma2,
    Gemma2DecoderLayer,
    GemmaDecoderLayer,
    GemmaRMSNorm,
    gemma,
    gemma2,
    gemma_parameter_count,
    load_hf_gemma2_state_dict,
    load_hf_gemma_state_dict,
)
from lamina.models.ghostnet import (
    GHOSTNET_CONFIG,
    GhostBottleneck,
    GhostModule,
    GhostNet,
    ghostnet_0_5,
    ghostnet_1_0,
    ghostnet_1_3,
)
from lamina.models.glove import GloVe, glove_loss, glove_weights
from lamina.models.glow import (
    ActNorm2D,
    AffineCoupling2D,
    Glow,
    GlowStep,
    InvertibleConv1x1,
    SplitPrior,
    Squeeze2D,
    dequantize,
)
from lamina.models.googlenet import GoogLeNet, InceptionAux, InceptionModule, googlenet
from lamina.models.gp_curves import GPCurves, NPTask
from lamina.models.gpt2 import GPT2, GPT2Block, gpt2, gpt2_parameter_count, load_hf_gpt2_state_dict
from lamina.models.gpt_neox import (
    GPT_NEOX_CONFIGS,
    GPTNeoX,
    GPTNeoXLayer,
    GPTNeoXMLP,
    gpt_neox,
    gpt_neox_parameter_count,
    load_hf_gpt_neox_state_dict,
)
from lamina.models.graph_autoencoder import GAE, VGAE, InnerProductDecoder
from lamina.models.griffin import (
    GRIFFIN_CONFIGS,
    Griffin,
    GriffinResidualBlock,
    Hawk,
    LocalMQAttention,
    griffin,
    griffin_parameter_count,
    hawk,
)
from lamina.models.guidance_distillation import (
    GuidanceDenoisingMLP,
    GuidanceDenoisingUNet,
    GuidanceDistilledDiffusion,
    guidance_distillation_loss,
)
from lamina.models.hifigan import (
    HiFiGANGenerator,
    HiFiGANResBlock,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    NormalizedConv,
    PeriodDiscriminator,
    ScaleDiscriminator,
)
from lamina.models.hopfield_network import HopfieldNetwork
from lamina.models.hrnet import HRNet, HRNetModule, hrnet_lite
from lamina.models.hubert import (
    HUBERT_CONFIGS,
    HuBERTModel,
    HuBERTOutput,
    hubert,
    hubert_frame_geometry,
    hubert_logits,
    hubert_loss,
    hubert_mfcc_frames,
    hubert_targets_from_features,
    hubert_targets_from_mfcc,
    kmeans_fit,
)
from lamina.models.ibot import IBOTLoss, MaskedViTEncoder, block_masks, ibot_patch_cross_entropy
from lamina.models.ijepa import (
    IJEPA,
    IJEPAEncoder,
    IJEPAPredictor,
    MultiBlockMasks,
    ema_momentum_schedule,
    ijepa_loss,
    multiblock_masks,
    target_layer_norm,
)
from lamina.models.inception import (
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionV3,
    InceptionV3Aux,
    inception_v3,
)
from lamina.models.interpretable import NAM, MonotonicDense, MonotonicNetwork
from lamina.models.iwae import IWAE, estimate_log_likelihood, importance_log_weights, iwae_loss
from lamina.models.kan import KAN
from lamina.models.keypoint_rcnn import (
    KeypointRCNN,
    KeypointRCNNHeads,
    KeypointRCNNPredictor,
    KeypointRoIHeads,
    keypointrcnn_resnet50_fpn,
)
from lamina.models.kge import ComplEx, DistMult, KGEModel, RotatE, TransE
from lamina.models.kge_evaluation import (
    evaluate_link_prediction,
    filtered_ranks,
    link_prediction_metrics,
    ranks_from_scores,
)
from lamina.models.kge_losses import (
    corrupt_triples,
    fit_kge,
    margin_ranking_loss,
    one_to_n_loss,
    self_adversarial_loss,
)
from lamina.models.knn_lm import (
    KNNDatastore,
    build_datastore,
    knn_distribution,
    knn_lm_generate,
    knn_lm_log_probs,
    knn_lm_perplexity,
)
from lamina.models.koopman import KoopmanAutoencoder, KoopmanLoss
from lamina.models.latent_diffusion import (
    AutoencoderKL,
    DiagonalGaussian,
    KLDecoder,
    KLEncoder,
    KLResidualBlock,
    LatentDiffusion,
    estimate_scaling_factor,
)
from lamina.models.latent_ode import LatentODE
from lamina.models.levit import (
    LEVIT_128S,
    LeViT,
    LeViTAttention,
    LeViTAttentionSubsample,
    LeViTBlock,
    LeViTDownsample,
    LinearNorm,
    levit_128s,
    levit_attention_bias_index,
    levit_tiny,
)
from lamina.models.lightgcn import (
    NGCF,
    LightGCN,
    NGCFLayer,
    bpr_loss,
    fit_bpr,
    full_ranking_metrics,
    lightgcn_propagate,
    ngcf_propagate,
    normalized_adjacency,
)
from lamina.models.llama import (
    Llama,
    LlamaDecoderLayer,
    LlamaMLP,
    llama,
    llama_parameter_count,
    load_hf_llama_state_dict,
)
from lamina.models.llama_gguf import (
    deinterleave_rotary_rows,
    interleave_rotary_rows,
    llama_config_from_gguf,
    load_gguf_llama,
    save_gguf_llama,
)
from lamina.models.llava import (
    IGNORE_INDEX,
    LLaVA,
    SplicedInputs,
    answer_labels,
    freeze_for_stage,
    llava_loss,
    splice_image_tokens,
)
from lamina.models.lpips import (
    LPIPS,
    TwoAFCResult,
    alexnet_features,
    load_lpips_backbone,
    load_lpips_weights,
    lpips_loss,
    train_lpips,
    two_afc_agreement,
)
from lamina.models.lraspp import LRASPP, LRASPPHead, lraspp_mobilenet_v3_large
from lamina.models.mae import (
    MAE_CONFIGS,
    MAEClassifier,
    MaskedAutoencoderViT,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    masking_indices,
    patchify,
    random_masking,
    sincos_position_embedding,
    unpatchify,
)
from lamina.models.mamba import (
    MAMBA_CONFIGS,
    Mamba,
    MambaBackbone,
    MambaLayer,
    load_hf_mamba_state_dict,
    mamba,
    mamba_parameter_count,
)
from lamina.models.mamba2 import Mamba2LM
from lamina.models.mask2former import (
    Mask2Former,
    MaskClassificationLoss,
    mask_matching_cost,
    masked_attention,
    masked_attention_mask,
    panoptic_inference,
    semantic_inference,
)
from lamina.models.mask_rcnn import (
    MaskRCNN,
    MaskRCNNHeads,
    MaskRCNNPredictor,
    MaskRoIHeads,
    maskrcnn_resnet50_fpn,
)
from lamina.models.maskgit import MaskGIT, cosine_mask_schedule, mask_schedule_counts, masked_token_loss
from lamina.models.matching_network import (
    AttentionLSTM,
    MatchingNetwork,
    SupportContextLSTM,
    episode_labels,
    matching_log_probabilities,
)
from lamina.models.matrix_factorization import MatrixFactorization, als
from lamina.models.maxvit import (
    MaxVitLayer,
    MaxVitMBConv,
    PartitionAttention,
    RelativePositionalMultiHeadAttention,
    maxvit,
    maxvit_t,
)
from lamina.models.medusa import (
    MedusaHeads,
    MedusaOutput,
    MedusaTree,
    cartesian_tree,
    medusa_decode,
    medusa_generate,
    medusa_loss,
    medusa_tree,
    typical_acceptance,
)
from lamina.models.medusa_batch import medusa_generate_batch
from lamina.models.memory_network import MemN2N, position_encoding
from lamina.models.mistral import MISTRAL_CONFIGS, Mistral, load_hf_mistral_state_dict, mistral
from lamina.models.mixtral import (
    MIXTRAL_CONFIGS,
    Mixtral,
    MixtralDecoderLayer,
    MixtralSparseMoeBlock,
    load_balancing_loss,
    load_hf_mixtral_state_dict,
    mixtral,
    mixtral_parameter_count,
)
from lamina.models.mlp_mixer import (
    MIXER_CONFIGS,
    RESMLP_CONFIGS,
    Affine,
    MixerBlock,
    ResMLPBlock,
    mixer_b16_224,
    mixer_b32_224,
    mixer_l16_224,
    mixer_s16_224,
    mixer_s32_224,
    mlp_mixer,
    resmlp,
    resmlp_12_224,
    resmlp_24_224,
    timm_mlp,
)
from lamina.models.mnasnet import MnasNetBlock, mnasnet, mnasnet0_5, mnasnet0_75, mnasnet1_0, mnasnet1_3
from lamina.models.mobilenet import mobilenet
from lamina.models.mobilenet_fpn import MobileNetBackboneWithFPN, fasterrcnn_mobilenet_v3_large_fpn
from lamina.models.mobilenet_v2 import InvertedResidual, make_divisible, mobilenet_v2
from lamina.models.mobilenet_v3 import MobileNetV3Block, mobilenet_v3, mobilenet_v3_large, mobilenet_v3_small
from lamina.models.mobileone import MobileOne, MobileOneBlock, mobileone_s0, mobileone_s1, mobileone_tiny
from lamina.models.mobilevit import (
    MOBILEVIT_CONFIGS,
    MobileViTBlock,
    fold_patches,
    mobilevit,
    mobilevit_s,
    mobilevit_xs,
    mobilevit_xxs,
    unfold_patches,
)
from lamina.models.multi_token import MTPModules, MultiTokenHeads, mtp_loss, multi_token_loss
from lamina.models.multitask_rec import PLE, ExpertGroup, MMoE, SharedBottom
from lamina.models.musicgen import (
    CODEBOOK_PATTERNS,
    MultiStreamLM,
    build_pattern,
    multi_stream_loss,
    pattern_length,
    pattern_mask,
    pattern_positions,
    revert_pattern,
    sample_codebooks,
)
from lamina.models.nca import (
    NCATrainResult,
    NeuralCA,
    SelfClassifyingCA,
    circle_damage_masks,
    nca_perception_kernels,
    normalize_gradients,
    soft_life_step,
    train_nca,
    train_self_classifying_ca,
)
from lamina.models.ncf import GMF, NCF, NCFMLP, NeuMF
from lamina.models.ncsn import NCSNMLP, annealed_langevin_sample, geometric_sigmas
from lamina.models.nerf import NeRF, TinyNeRF
from lamina.models.nerf_render import NeRFRenderer, mse_to_psnr, nerf_train_step
from lamina.models.neural_process import (
    AttentiveNeuralProcess,
    ConditionalNeuralProcess,
    MultiheadCrossAttention,
    NeuralProcess,
)
from lamina.models.neus import (
    ColorNetwork,
    NeuS,
    SDFNetwork,
    eikonal_loss,
    level_set_points,
    neus_render,
    neus_train_step,
    neus_weights,
    surface_chamfer_distance,
)
from lamina.models.nfnet import (
    ACTIVATION_GAMMAS,
    NFBlock,
    NFResNet,
    ScaledActivation,
    nf_resnet18,
    nf_resnet34,
    nf_resnet_cifar,
)
from lamina.models.nfnet_f import NFNET_F_CONFIGS, NFBottleneck, NFNet, nfnet_f0, nfnet_f1
from lamina.models.ngpt import NGPT, NGPTBlock, normalize_ngpt_weights
from lamina.models.node import NODE, ObliviousDecisionTrees
from lamina.models.node2vec import Node2Vec
from lamina.models.ntm import (
    NTM,
    NTMCell,
    NTMState,
    circular_shift,
    content_addressing,
    erase_and_add,
    interpolate,
    memory_read,
    sharpen,
)
from lamina.models.ode_rnn import ODERNN, ODEFunc, check_irregular_batch
from lamina.models.owlvit import (
    OWLViT,
    OWLViTCriterion,
    OWLViTOutput,
    owlvit_box_bias,
    owlvit_matching_cost,
    owlvit_postprocess,
)
from lamina.models.p4cnn import P4CNN, p4cnn
from lamina.models.perceiver import (
    Perceiver,
    PerceiverBlock,
    PerceiverEncoder,
    PerceiverIO,
    fourier_position_features,
)
from lamina.models.pfn import PFN, PFNTrainResult, pfn_attention_mask, train_pfn
from lamina.models.phi3 import PHI3_CONFIGS, Phi3, load_hf_phi3_state_dict, phi3, phi3_parameter_count
from lamina.models.physics import (
    PINN,
    Burgers1D,
    DeepONet,
    HamiltonianNN,
    Heat1D,
    LagrangianNN,
    PDEProblem,
    PINNLoss,
    Poisson1D,
    antiderivative_data,
    derivative,
    gradient,
    hamiltonian_vector_field,
    lagrangian_acceleration,
    laplacian,
    leapfrog,
    mlp_network,
    relative_l2_error,
    stormer_verlet,
    symplectic_euler,
)
from lamina.models.pix2pix import PatchGANDiscriminator, Pix2PixGenerator
from lamina.models.pixelcnn import GatedPixelCNN, GatedPixelCNNLayer, PixelCNN
from lamina.models.poincare_embeddings import (
    PoincareEmbeddingResult,
    balanced_tree,
    reconstruction_metrics,
    train_poincare_embeddings,
    transitive_closure,
)
from lamina.models.point_transformer import (
    PointTransformerBlock,
    PointTransformerClassifier,
    PointTransformerLayer,
    PointTransformerSegmentation,
    TransitionDown,
    TransitionUp,
    interpolation_weights,
    nearest_neighbours,
    point_transformer_classifier,
    point_transformer_segmentation,
)
from lamina.models.pointer_network import PointerNetwork, pointer_logits
from lamina.models.pointnet import PointNet, PointNetSegmentation, SharedMLP, TNet, transform_regularizer
from lamina.models.pointnet2 import PointNet2, SetAbstraction, pointnet2_msg, pointnet2_ssg
from lamina.models.pointrend import (
    PointHead,
    PointRendSemSeg,
    point_sample,
    point_uncertainty,
    pointrend_from_segmentation,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
)
from lamina.models.poolformer import (
    POOLFORMER_CONFIGS,
    PoolFormerBlock,
    PoolingMixer,
    poolformer,
    poolformer_m36,
    poolformer_m48,
    poolformer_s12,
    poolformer_s24,
    poolformer_s36,
)
from lamina.models.pose import (
    SimpleBaseline,
    SimpleBaselineHead,
    TopDownPoseEstimator,
    simple_baseline_resnet,
)
from lamina.models.progressive_distillation import (
    DISTILLATION_WEIGHTINGS,
    distillation_grid,
    distillation_target,
    distillation_weight,
    grid_sample,
    progressive_distillation_loss,
)
from lamina.models.projection import projection_head
from lamina.models.protopnet import (
    ProtoPNet,
    PrototypeMatch,
    fine_tune_last_layer,
    last_layer_l1,
    prototype_cluster_cost,
    prototype_distances,
    prototype_separation_cost,
    prototype_similarity,
)
from lamina.models.pspnet import (
    PSP_BINS,
    PyramidPooling,
    psp_head,
    pspnet,
    pspnet_loss,
    pspnet_resnet50,
    pspnet_small,
)
from lamina.models.pvt import (
    PVTV2_CONFIGS,
    OverlapPatchEmbed,
    PVTv2,
    PVTv2Block,
    PVTv2FFN,
    SpatialReductionAttention,
    pvt_v2,
    pvt_v2_b0,
    pvt_v2_b1,
    pvt_v2_tiny,
)
from lamina.models.qformer import (
    BLIP2Stage1,
    QFormer,
    QFormerLayer,
    image_text_contrastive_loss,
    mine_hard_negatives,
    qformer_attention_mask,
)
from lamina.models.quartznet import (
    JASPER_TINY,
    QUARTZNET_TINY,
    QuartzNet,
    QuartzNetBlock,
    TCSConv1D,
    conv_output_length,
    greedy_transcribe,
    jasper_tiny,
    quartznet_5x5,
    quartznet_15x5,
    quartznet_ctc_loss,
    quartznet_tiny,
    word_error_rate,
)
from lamina.models.qwen2 import QWEN2_CONFIGS, Qwen2, load_hf_qwen2_state_dict, qwen2, qwen2_parameter_count
from lamina.models.raft import (
    RAFT,
    ConvGRU,
    CorrBlock,
    FeatureEncoder,
    FlowHead,
    MaskPredictor,
    MotionEncoder,
    RecurrentBlock,
    UpdateBlock,
    correlation_pyramid,
    correlation_volume,
    index_pyramid,
    make_coords_grid,
    raft,
    raft_large,
    raft_small,
    upsample_flow,
)
from lamina.models.rbm import RBM
from lamina.models.registry import MODEL_GROUPS, get_model, get_model_builder, list_models
from lamina.models.regnet import (
    RegNetBlock,
    regnet,
    regnet_block_params,
    regnet_x_1_6gf,
    regnet_x_3_2gf,
    regnet_x_8gf,
    regnet_x_16gf,
    regnet_x_32gf,
    regnet_x_400mf,
    regnet_x_800mf,
    regnet_y_1_6gf,
    regnet_y_3_2gf,
    regnet_y_8gf,
    regnet_y_16gf,
    regnet_y_32gf,
    regnet_y_128gf,
    regnet_y_400mf,
    regnet_y_800mf,
)
from lamina.models.relation_network import RELATION_OBJECTIVES, RelationNetwork, class_feature_sums, relation_pairs
from lamina.models.reparam import ReparamBlock, conv_bn_kernel, identity_kernel, reparameterize, reparameterized
from lamina.models.repvgg import RepVGG, RepVGGBlock, repvgg_a0, repvgg_a1, repvgg_a2, repvgg_b0, repvgg_tiny
from lamina.models.reservoir import EchoStateNetwork
from lamina.models.resnest import (
    ResNeSt,
    ResNeStBottleneck,
    SKBlock,
    SKConv,
    SKNet,
    SplitAttention,
    resnest50,
    resnest_tiny,
    sknet50,
    sknet_tiny,
)
from lamina.models.resnet import (
    BasicBlock,
    Bottleneck,
    resnet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_cifar,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from lamina.models.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
    retinanet_resnet50_fpn,
)
from lamina.models.retnet import RetNet, RetNetLayer
from lamina.models.retrievers import (
    ColBERT,
    DenseIndex,
    DPRDualEncoder,
    augment_queries,
    document_token_mask,
    in_batch_negatives_loss,
    late_interaction_scores,
)
from lamina.models.retro import RETRO, RETRO_CONFIGS, ChunkedCrossAttention, retro, retro_loss
from lamina.models.retro_retrieval import RetroDatabase, retro_generate, split_chunks
from lamina.models.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from lamina.models.rpn import RegionProposalNetwork, RPNHead
from lamina.models.rwkv import RWKV, RWKVBlock
from lamina.models.s3d import ConvBN3D, SepInceptionBlock3D, TemporalSeparableConv, s3d
from lamina.models.saint import SAINT, IntersampleAttention
from lamina.models.sam import (
    SAMAttention,
    SAMMaskDecoder,
    SAMOutput,
    SAMPromptEncoder,
    SegmentAnything,
    TwoWayAttentionBlock,
    TwoWayTransformer,
    sam_loss,
    tiny_sam,
)
from lamina.models.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EDMPrecond,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
    edm_loss,
    edm_sampler,
    karras_sigmas,
)
from lamina.models.schedulers.score_sde import (
    euler_maruyama_predictor,
    langevin_corrector,
    ode_log_likelihood,
    ode_sample,
    pc_sample,
    probability_flow_ode,
    reverse_diffusion_predictor,
    reverse_sde,
)
from lamina.models.score_sde import SDE, VESDE, VPSDE, ScoreSDEMLP, make_sde, score_sde_loss, subVPSDE
from lamina.models.segformer import (
    SEGFORMER_VARIANTS,
    SegformerAttention,
    SegformerConfig,
    SegformerDecodeHead,
    SegformerEfficientSelfAttention,
    SegformerEncoder,
    SegformerForSemanticSegmentation,
    SegformerLayer,
    SegformerMixFFN,
    SegformerModel,
    SegformerOverlapPatchEmbeddings,
    hf_segformer_table,
    load_hf_segformer_state_dict,
    segformer,
    segformer_loss,
)
from lamina.models.segmentation import (
    ASPP,
    SegmentationModel,
    deeplabv3_resnet50,
    deeplabv3_resnet101,
    fcn_resnet50,
    fcn_resnet101,
)
from lamina.models.segnet import SEGNET_VGG16_STAGES, SegNet, segnet_small, segnet_vgg16
from lamina.models.self_speculative import SelfSpeculativeOutput, self_speculative_generate
from lamina.models.self_supervised import MoCoQueue, SwAVPrototypes
from lamina.models.seq2seq import AttentionSeq2Seq
from lamina.models.sequence import rnn_classifier, rnn_language_model, transformer_language_model
from lamina.models.sequential_rec import (
    BERT4Rec,
    GRU4Rec,
    SASRec,
    cloze_mask,
    fit_sequential,
    sequence_attention_mask,
)
from lamina.models.set_models import DeepSets, SetTransformer
from lamina.models.show_attend_tell import ShowAttendTell
from lamina.models.shufflenet import (
    ShuffleNetV2Unit,
    shufflenet_v2,
    shufflenet_v2_x0_5,
    shufflenet_v2_x1_0,
    shufflenet_v2_x1_5,
    shufflenet_v2_x2_0,
)
from lamina.models.siglip import SigLIP, siglip
from lamina.models.simmim import SimMIM, simmim_loss, simmim_masks
from lamina.models.sindy import SR3, STLSQ, SINDy, finite_difference, savgol_derivative
from lamina.models.sindy_library import (
    ConcatLibrary,
    CustomLibrary,
    FeatureLibrary,
    FourierLibrary,
    PolynomialLibrary,
    TensoredLibrary,
)
from lamina.models.slot_autoencoder import (
    SlotAttentionAutoEncoder,
    SlotReconstruction,
    SoftPositionEmbed,
    position_grid,
)
from lamina.models.slowfast import (
    SlowFast,
    SlowFastBottleneck,
    SlowFastLateral,
    pack_pathways,
    slowfast_r50,
    slowfast_tiny,
)
from lamina.models.soft_trees import NeuralDecisionForest, SoftDecisionTree, routing_probabilities
from lamina.models.solo import SOLOv2, coord_features, solov2_resnet50_fpn, solov2_tiny
from lamina.models.solo_ops import (
    dynamic_mask_logits,
    matrix_nms,
    solo_dice_loss,
    solo_focal_loss,
    solo_targets,
)
from lamina.models.som import SelfOrganizingMap
from lamina.models.sparse_autoencoder import FeatureActivity, SAEOutput, SparseAutoencoder
from lamina.models.speaker import (
    AttentiveStatisticsPooling,
    StatisticsPooling,
    TDNNBlock,
    XVector,
    frame_mask,
    masked_statistics,
)
from lamina.models.spline_flows import SplineAutoregressive, SplineCoupling
from lamina.models.squeeze_excitation import SqueezeExcitation
from lamina.models.squeezenet import Fire, squeezenet, squeezenet1_0, squeezenet1_1
from lamina.models.ssd import (
    SSD,
    DefaultBoxGenerator,
    SSDClassificationHead,
    SSDFeatureExtractorVGG,
    SSDHead,
    SSDRegressionHead,
    ssd300_vgg16,
)
from lamina.models.ssdlite import (
    SSDLiteClassificationHead,
    SSDLiteFeatureExtractorMobileNet,
    SSDLiteHead,
    SSDLiteRegressionHead,
    ssdlite320_mobilenet_v3_large,
)
from lamina.models.statespace import (
    GaussianMixture,
    HiddenMarkovModel,
    KalmanFilter,
    ParticleFilter,
    ParticleFilterResult,
    kalman_log_likelihood,
    multinomial_resample,
    stratified_resample,
    systematic_resample,
)
from lamina.models.stylegan2 import (
    EqualizedConv2D,
    EqualizedDense,
    MappingNetwork,
    ModulatedConv2D,
    NoiseInjection,
    PathLengthPenalty,
    StyleGAN2Generator,
    SynthesisLayer,
    ToRGB,
    modulated_conv2d,
    pixel_norm,
)
from lamina.models.super_resolution import (
    EDSR,
    ESPCN,
    SRCNN,
    DnCNN,
    EDSRResidualBlock,
    SRResNet,
    SRResNetBlock,
)
from lamina.models.superglue import (
    MatchingPairs,
    SuperGlue,
    log_optimal_transport,
    matching_precision_recall,
    superglue_loss,
    superglue_match,
    synthetic_matching_pairs,
)
from lamina.models.svgp import SVGP
from lamina.models.swin import (
    PatchMerging,
    PatchMergingV2,
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
    swin,
    swin_b,
    swin_s,
    swin_t,
    swin_v2,
    swin_v2_b,
    swin_v2_s,
    swin_v2_t,
)
from lamina.models.t5 import T5, T5_CONFIGS, T5Attention, T5Block, T5DenseFF, T5Stack, load_hf_t5_state_dict, t5
from lamina.models.tab_transformer import TabTransformer
from lamina.models.tabnet import GhostBatchNorm, TabNet
from lamina.models.tabular_baselines import TabMLP, TabResNet
from lamina.models.tacotron2 import LocationSensitiveAttention, Tacotron2, tacotron2_loss
from lamina.models.tgn import TGN, last_messages
from lamina.models.timesformer import TimeSformer, TimeSformerBlock
from lamina.models.timm_weights import load_timm_state_dict
from lamina.models.torchvision import load_torchvision_state_dict
from lamina.models.transducer import ConformerTransducer
from lamina.models.transfer import transfer
from lamina.models.transformer_net import TransformerNet
from lamina.models.transformer_xl import (
    RelativeMultiHeadAttention,
    TransformerXL,
    TransformerXLLayer,
    relative_shift,
    sinusoidal_relative_encoding,
)
from lamina.models.trocr import TrOCR, trocr_small
from lamina.models.tsc import (
    FCN,
    MINIROCKET_KERNEL_INDICES,
    ConvBlock1D,
    InceptionModule1D,
    InceptionTime,
    InceptionTimeEnsemble,
    MiniRocket,
    MultiRocket,
    ResNet1D,
    ResNetBlock1D,
    Rocket,
    RocketClassifier,
    inception_kernel_sizes,
    minirocket_dilations,
    minirocket_kernels,
)
from lamina.models.two_tower import TwoTower, in_batch_softmax_loss, item_log_frequencies
from lamina.models.unet import DoubleConv, UNet, unet
from lamina.models.unet_plus_plus import UNET_PLUS_PLUS_MODES, UNetPlusPlus, unet_plus_plus, unet_plus_plus_loss
from lamina.models.variational_flows import InverseAutoregressive, PlanarFlow, RadialFlow
from lamina.models.vgg import vgg, vgg11, vgg13, vgg16, vgg19
from lamina.models.video import Conv2Plus1D, VideoBasicBlock, mc3_18, midplanes, r2plus1d_18, r3d_18, video_resnet
from lamina.models.videomae import VideoMAE, VideoMAEClassifier, sinusoid_table, tube_masking, tubelet_targets
from lamina.models.vision_mamba import (
    CLS_POSITIONS,
    VIM_CONFIGS,
    VimBlock,
    VimMixer,
    VisionMamba,
    vim_small,
    vim_tiny,
    vision_mamba_parameter_count,
)
from lamina.models.vit import (
    ClassTokenEmbedding,
    VisionTransformer,
    vit,
    vit_b_16,
    vit_b_32,
    vit_h_14,
    vit_l_16,
    vit_l_32,
)
from lamina.models.vit_registers import RegisterTokens, ViTWithRegisters, drop_registers, vit_with_registers
from lamina.models.vit_tome import ToMeEncoder, apply_tome, remove_tome, tome_encoder_macs, tome_token_counts
from lamina.models.vivit import (
    FactorisedSelfAttentionBlock,
    TubeletEmbedding,
    ViViT,
    inflate_patch_embedding,
    vivit_b_16x2_fe,
    vivit_tiny,
)
from lamina.models.vqgan import VQGAN, NonLocalBlock, VQGANOutput, VQGANResBlock, vqgan_tiny
from lamina.models.vqgan_prior import VQGANTransformer
from lamina.models.vqvae import VQVAE, VQVAEOutput
from lamina.models.wav2vec2 import (
    WAV2VEC2_CONFIGS,
    Wav2Vec2Attention,
    Wav2Vec2ConvLayer,
    Wav2Vec2Encoder,
    Wav2Vec2EncoderLayer,
    Wav2Vec2FeatureEncoder,
    Wav2Vec2FeatureProjection,
    Wav2Vec2FeedForward,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
    Wav2Vec2PositionalConvEmbedding,
    wav2vec2,
    wav2vec2_input_values,
)
from lamina.models.wav2vec2_masking import compute_mask_indices, sample_negative_indices
from lamina.models.wav2vec2_pretraining import (
    WAV2VEC2_PRETRAINING_CONFIGS,
    Wav2Vec2ForPreTraining,
    Wav2Vec2GumbelVectorQuantizer,
    Wav2Vec2PreTrainingOutput,
    gumbel_temperature,
    wav2vec2_pretraining,
)
from lamina.models.wav2vec2_weights import hf_wav2vec2_table, load_hf_wav2vec2_state_dict
from lamina.models.wavenet import WaveNet, WaveNetLayer
from lamina.models.wavernn import WaveRNN, merge_coarse_fine, split_coarse_fine
from lamina.models.whisper import (
    WHISPER_CONFIGS,
    Whisper,
    WhisperAttention,
    WhisperDecoder,
    WhisperDecoderLayer,
    WhisperEncoder,
    WhisperEncoderLayer,
    WhisperModel,
    load_hf_whisper_state_dict,
    pad_or_trim,
    whisper,
    whisper_log_mel_spectrogram,
    whisper_sinusoids,
)
from lamina.models.whisper_decoding import (
    WhisperSegment,
    WhisperSpecialTokens,
    WhisperTimestampRules,
    WhisperWord,
    decode_with_timestamps,
    generate_with_timestamps,
    timestamp_segments,
)
from lamina.models.whisper_transcribe import (
    WhisperTranscription,
    WindowDecoding,
    decode_window,
    decode_with_fallback,
    transcribe,
)
from lamina.models.word2vec import SkipGram, negative_sampling_loss
from lamina.models.xlnet import (
    TwoStreamRelativeAttention,
    XLNetLayer,
    XLNetLM,
    bidirectional_relative_encoding,
    partial_prediction_mask,
    permutation_masks,
    sample_factorization_order,
)
from lamina.models.yolox import YOLOX, simota_assign, yolox_decode, yolox_iou_loss, yolox_nano, yolox_tiny

__all__ = [
    "AdaptiveAvgPool2D", "AttentionSeq2Seq", "BasicBlock", "Block", "Bottleneck", "BranchingNetwork", "ConvBN",
    "GoogLeNet", "InceptionA", "InceptionAux", "InceptionB", "InceptionC", "InceptionD", "InceptionE",
    "InceptionModule", "InceptionV3", "InceptionV3Aux", "SkipGram", "alexnet", "googlenet", "grid_detector",
    "inception_v3", "lenet5", "load_torchvision_state_dict", "logistic_regression", "mlp", "mobilenet",
    "negative_sampling_loss", "resnet", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "resnet_cifar",
    "rnn_classifier", "rnn_language_model", "transfer", "transformer_language_model", "vgg", "vgg11", "vgg13",
    "vgg16", "vgg19", "zfnet", "Autoencoder", "ConvAutoencoder", "VAE", "dcgan_discriminator", "dcgan_generator",
    "DenseBlock", "DenseLayer", "InvertedResidual", "densenet", "densenet121", "densenet169", "densenet201",
    "make_divisible", "mobilenet_v2", "ClassTokenEmbedding", "DoubleConv", "UNet", "VisionTransformer", "unet",
    "vit", "vit_b_16",
    "ConvNeXtBlock", "Fire", "MBConv", "MobileNetV3Block", "ShuffleNetV2Unit", "SqueezeExcitation", "convnext",
    "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "efficientnet", "efficientnet_b0",
    "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
    "efficientnet_b6", "efficientnet_b7", "mobilenet_v3", "mobilenet_v3_large", "mobilenet_v3_small",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2", "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet", "squeezenet1_0",
    "squeezenet1_1", "wide_resnet101_2", "wide_resnet50_2",
    "ActNorm", "AffineCoupling", "FlowLogProb", "InvertibleLayer", "MaskedAutoregressive", "NormalizingFlow",
    "Permute", "Reverse", "density_nll", "realnvp",
    "CONVMIXER_CONFIGS", "ConvMixerResidual", "convmixer", "convmixer_1024_20_ks9_p14", "convmixer_1536_20",
    "convmixer_768_32", "DEIT_CONFIGS", "DeiT", "DeiTAttention", "DeiTBlock", "FusedQKVAttention", "deit",
    "deit_base_distilled_patch16_224", "deit_base_patch16_224", "deit_small_distilled_patch16_224",
    "deit_small_patch16_224", "deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224", "hard_distillation_loss",
    "MIXER_CONFIGS",
    "RESMLP_CONFIGS", "Affine", "MixerBlock", "ResMLPBlock", "mixer_b16_224", "mixer_b32_224", "mixer_l16_224",
    "mixer_s16_224", "mixer_s32_224", "mlp_mixer", "resmlp", "resmlp_12_224", "resmlp_24_224", "timm_mlp",
    "load_timm_state_dict",
    "projection_head",
    "DenoisingMLP", "DenoisingUNet", "DiffusionModel", "NoiseSchedule", "TimeResidualBlock", "make_schedule",
    "timestep_embedding",
    "GaussianProcessRegressor", "kernels", "SVGP", "DeepKernel",
    "ENET_KINDS", "ENET_MIDDLE_PATTERN", "ENet", "ENetBottleneck", "ENetDownsampling", "ENetInitialBlock",
    "ENetUpsampling", "enet", "enet_small", "SEGNET_VGG16_STAGES", "SegNet", "segnet_small", "segnet_vgg16",
    "ASPP", "SegmentationModel", "deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet50", "fcn_resnet101",
    "SEGFORMER_VARIANTS", "SegformerAttention", "SegformerConfig", "SegformerDecodeHead",
    "SegformerEfficientSelfAttention", "SegformerEncoder", "SegformerForSemanticSegmentation", "SegformerLayer",
    "SegformerMixFFN", "SegformerModel", "SegformerOverlapPatchEmbeddings", "hf_segformer_table",
    "load_hf_segformer_state_dict", "segformer", "segformer_loss",
    "RAFT", "ConvGRU", "CorrBlock", "FeatureEncoder", "FlowHead", "MaskPredictor", "MotionEncoder", "RecurrentBlock",
    "UpdateBlock", "correlation_pyramid", "correlation_volume", "index_pyramid", "make_coords_grid", "raft",
    "raft_large", "raft_small", "upsample_flow",
    "MatchingPairs", "SuperGlue", "log_optimal_transport", "matching_precision_recall", "superglue_loss",
    "superglue_match", "synthetic_matching_pairs",
    "RegNetBlock", "regnet", "regnet_block_params", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
    "regnet_x_16gf", "regnet_x_32gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf",
    "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf", "regnet_y_400mf", "regnet_y_800mf",
    "PatchMerging", "ShiftedWindowAttention", "SwinTransformerBlock", "swin", "swin_b", "swin_s", "swin_t",
    "Conv2Plus1D", "VideoBasicBlock", "mc3_18", "midplanes", "r2plus1d_18", "r3d_18", "video_resnet",
    "ConvBN3D", "SepInceptionBlock3D", "TemporalSeparableConv", "s3d",
    "FusedMBConv", "efficientnet_v2", "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s",
    "BiFPN", "BiFPNLayer", "EfficientDet", "EfficientDetHead", "EfficientNetFeatures", "efficientdet_d0",
    "efficientdet_tiny", "fast_normalized_fusion",
    "MnasNetBlock", "mnasnet", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32",
    "PatchMergingV2", "ShiftedWindowAttentionV2", "SwinTransformerBlockV2", "swin_v2", "swin_v2_b", "swin_v2_s",
    "swin_v2_t",
    "MaxVitLayer", "MaxVitMBConv", "PartitionAttention", "RelativePositionalMultiHeadAttention", "maxvit",
    "maxvit_t",
    "BackboneWithFPN", "FCOS", "FCOSHead", "FeaturePyramidNetwork", "FrozenBatchNorm2D", "LastLevelMaxPool",
    "LastLevelP6P7", "RetinaNet", "RetinaNetClassificationHead", "RetinaNetHead", "RetinaNetRegressionHead",
    "fcos_resnet50_fpn", "resnet_fpn_backbone", "retinanet_resnet50_fpn",
    "DETR", "DetrAttention", "DetrBackbone", "DetrDecoderLayer", "DetrEncoderLayer", "DetrMLP", "DetrTransformer",
    "SetCriterion", "detr_resnet50", "sine_position_encoding",
    "DeformableDETR", "DeformableDetrConvBackbone", "DeformableDetrCriterion", "DeformableDetrDecoderLayer",
    "DeformableDetrEncoderLayer", "DeformableDetrResNetBackbone", "DeformableDetrTransformer",
    "deformable_detr_resnet50", "deformable_detr_small", "deformable_position_encoding", "focal_matching_cost",
    "inverse_sigmoid", "refine_boxes",
    "FastRCNNPredictor", "FasterRCNN", "RPNHead", "RegionProposalNetwork", "RoIHeads", "TwoMLPHead",
    "fasterrcnn_resnet50_fpn", "MaskRCNN", "MaskRCNNHeads", "MaskRCNNPredictor", "MaskRoIHeads",
    "maskrcnn_resnet50_fpn", "KeypointRCNN", "KeypointRCNNHeads", "KeypointRCNNPredictor", "KeypointRoIHeads",
    "keypointrcnn_resnet50_fpn", "MobileNetBackboneWithFPN", "fasterrcnn_mobilenet_v3_large_fpn",
    "DefaultBoxGenerator", "SSD", "SSDClassificationHead", "SSDFeatureExtractorVGG", "SSDHead", "SSDRegressionHead",
    "ssd300_vgg16", "SSDLiteClassificationHead", "SSDLiteFeatureExtractorMobileNet", "SSDLiteHead",
    "SSDLiteRegressionHead", "ssdlite320_mobilenet_v3_large",
    "LRASPP", "LRASPPHead", "lraspp_mobilenet_v3_large",
    "GPT2", "GPT2Block", "gpt2", "gpt2_parameter_count", "load_hf_gpt2_state_dict",
    "BERT", "BertEmbeddings", "BertForMaskedLM", "BertLayer", "bert", "bert_parameter_count",
    "load_hf_bert_state_dict",
    "ColBERT", "DPRDualEncoder", "DenseIndex", "augment_queries", "document_token_mask", "in_batch_negatives_loss",
    "late_interaction_scores",
    "DebertaEncoder", "DebertaForMaskedLM", "DebertaLayer", "disentangled_attention", "relative_position_buckets",
    "ELECTRA", "ElectraPretrainingOutput", "electra_pretraining_loss", "random_token_mask", "replaced_token_labels",
    "Llama", "LlamaDecoderLayer", "LlamaMLP", "llama", "llama_parameter_count", "load_hf_llama_state_dict",
    "deinterleave_rotary_rows", "interleave_rotary_rows", "llama_config_from_gguf", "load_gguf_llama",
    "save_gguf_llama",
    "T5", "T5_CONFIGS", "T5Attention", "T5Block", "T5DenseFF", "T5Stack", "load_hf_t5_state_dict", "t5",
    "MISTRAL_CONFIGS", "Mistral", "load_hf_mistral_state_dict", "mistral",
    "QWEN2_CONFIGS", "Qwen2", "load_hf_qwen2_state_dict", "qwen2", "qwen2_parameter_count",
    "GEMMA2_CONFIGS", "GEMMA_CONFIGS", "Gemma", "Gemma2", "Gemma2DecoderLayer", "GemmaDecoderLayer", "GemmaRMSNorm",
    "gemma", "gemma2", "gemma_parameter_count", "load_hf_gemma2_state_dict", "load_hf_gemma_state_dict",
    "PHI3_CONFIGS", "Phi3", "load_hf_phi3_state_dict", "phi3", "phi3_parameter_count",
    "GPT_NEOX_CONFIGS", "GPTNeoX", "GPTNeoXLayer", "GPTNeoXMLP", "gpt_neox", "gpt_neox_parameter_count",
    "load_hf_gpt_neox_state_dict",
    "MIXTRAL_CONFIGS", "Mixtral", "MixtralDecoderLayer", "MixtralSparseMoeBlock", "load_balancing_loss",
    "load_hf_mixtral_state_dict", "mixtral", "mixtral_parameter_count",
    "MAMBA_CONFIGS", "Mamba", "MambaBackbone", "MambaLayer", "load_hf_mamba_state_dict", "mamba",
    "mamba_parameter_count", "Mamba2LM",
    "FAST_WEIGHT_MIXERS", "FastWeightLM",
    "GRIFFIN_CONFIGS", "Griffin", "GriffinResidualBlock", "Hawk", "LocalMQAttention", "griffin",
    "griffin_parameter_count", "hawk",
    "MedusaHeads", "MedusaOutput", "MedusaTree", "cartesian_tree", "medusa_decode", "medusa_generate", "medusa_loss",
    "medusa_tree", "medusa_generate_batch", "typical_acceptance",
    "MTPModules", "MultiTokenHeads", "SelfSpeculativeOutput", "mtp_loss", "multi_token_loss",
    "self_speculative_generate",
    "KNNDatastore", "build_datastore", "knn_distribution", "knn_lm_generate", "knn_lm_log_probs",
    "knn_lm_perplexity",
    "WHISPER_CONFIGS", "Whisper", "WhisperAttention", "WhisperDecoder", "WhisperDecoderLayer", "WhisperEncoder",
    "WhisperEncoderLayer", "WhisperModel", "load_hf_whisper_state_dict", "pad_or_trim", "whisper",
    "whisper_log_mel_spectrogram", "whisper_sinusoids",
    "WhisperSegment", "WhisperSpecialTokens", "WhisperTimestampRules", "WhisperWord", "decode_with_timestamps",
    "generate_with_timestamps", "timestamp_segments", "WhisperTranscription", "WindowDecoding", "decode_window",
    "decode_with_fallback", "transcribe",
    "WAV2VEC2_CONFIGS", "Wav2Vec2Attention", "Wav2Vec2ConvLayer", "Wav2Vec2Encoder", "Wav2Vec2EncoderLayer",
    "Wav2Vec2FeatureEncoder", "Wav2Vec2FeatureProjection", "Wav2Vec2FeedForward", "Wav2Vec2ForCTC",
    "Wav2Vec2Model", "Wav2Vec2PositionalConvEmbedding", "hf_wav2vec2_table", "load_hf_wav2vec2_state_dict", "wav2vec2",
    "wav2vec2_input_values", "WAV2VEC2_PRETRAINING_CONFIGS", "Wav2Vec2ForPreTraining",
    "Wav2Vec2GumbelVectorQuantizer", "Wav2Vec2PreTrainingOutput", "compute_mask_indices", "gumbel_temperature",
    "sample_negative_indices", "wav2vec2_pretraining",
    "MODEL_GROUPS", "get_model", "get_model_builder", "list_models",
    "FNO1D", "FNO2D", "grid_coordinates",
    "NBEATS", "TCN", "DLinear", "NBeatsBlock", "PatchTST", "TemporalBlock", "dlinear", "fourier_basis",
    "moving_average_matrix", "nbeats", "patchtst", "polynomial_basis", "tcn", "tcn_receptive_field",
    "Autoformer", "Informer", "NHiTS", "TSMixer", "auto_correlation", "full_attention", "linear_interpolation_matrix",
    "ITransformer", "InceptionBlock2D", "TimesBlock", "TimesNet", "fft_periods", "fold_periods", "unfold_periods",
    "prob_sparse_attention", "query_sparsity", "series_decomposition", "time_delay_correlation",
    "GatedResidualNetwork", "InterpretableMultiHeadAttention", "StaticCovariateEncoder", "TemporalFusionTransformer",
    "VariableSelectionNetwork", "autoformer", "informer", "itransformer", "nhits", "tft", "timesnet", "tsmixer",
    "ChronosForecast", "ChronosGPT2Model", "ChronosModel", "MeanScaleUniformBins", "kernel_synth",
    "sample_gaussian_process", "tsmixup",
    "DeepAR", "DeepARForecast", "gaussian_log_prob", "item_scale", "negative_binomial_log_prob", "student_t_log_prob",
    "CLIP", "CLIPEncoderLayer", "CLIPOutput", "CLIPTextTransformer", "CLIPVisionTransformer", "ZeroShotClassifier",
    "clip", "clip_parameter_count", "clip_tokenize", "load_hf_clip_state_dict", "zero_shot_classifier",
    "AttentionPool2d", "CLIPBottleneck", "CLIPImageProcessor", "ModifiedResNet", "ResNetCLIP", "clip_resnet",
    "load_openai_clip_state_dict", "zero_shot_classify",
    "SigLIP", "siglip",
    "CLAP", "CLAPOutput", "CNN14Block", "CNN14Encoder", "LogMelFrontEnd", "audio_text_retrieval", "clap",
    "retrieval_recall_at_k", "zero_shot_audio_classifier",
]
__all__ += ["ALBERT_SHARING", "AlbertForMaskedLM", "AlbertForPreTraining", "AlbertLayer", "AlbertModel",
            "AlbertPretrainingOutput", "albert_parameter_count", "albert_pretraining_loss",
            "load_hf_albert_state_dict", "ngram_mask", "sop_pairs"]  # ALBERT (albert)
__all__ += ["BiLSTMCRF"]  # sequence tagging (bilstm_crf)
__all__ += ["CRNN"]  # text recognition (crnn)
__all__ += ["TrOCR", "trocr_small"]  # Transformer text recognition (trocr)
__all__ += ["MAE_CONFIGS", "MAEClassifier", "MaskedAutoencoderViT", "mae_vit_base_patch16", "mae_vit_huge_patch14",
            "mae_vit_large_patch16", "masking_indices", "patchify", "random_masking", "sincos_position_embedding",
            "unpatchify"]  # masked autoencoders (mae)
__all__ += ["DINOHead", "DINOLoss", "dino_cross_entropy"]  # self-distillation (dino)
__all__ += ["IBOTLoss", "MaskedViTEncoder", "block_masks", "ibot_patch_cross_entropy", "koleo_loss",  # DINOv2
            "sinkhorn_knopp_centering"]
__all__ += ["IJEPA", "IJEPAEncoder", "IJEPAPredictor", "MultiBlockMasks", "ema_momentum_schedule", "ijepa_loss",
            "multiblock_masks", "target_layer_norm"]  # joint-embedding predictive architecture (ijepa)
__all__ += ["Data2Vec", "Data2VecDecoder", "Data2VecImageEncoder", "Data2VecSequenceEncoder", "data2vec_loss",
            "data2vec_random_masks", "data2vec_span_masks", "data2vec_targets", "instance_norm_over_time",
            "sincos_1d_position_embedding"]  # data2vec (data2vec, data2vec_encoders)
__all__ += ["DLRM", "GMF", "NCF", "NCFMLP", "MatrixFactorization", "NeuMF", "TwoTower", "als", "dot_interaction",
            "in_batch_softmax_loss", "item_log_frequencies"]  # recommenders
__all__ += ["LightGCN", "NGCF", "NGCFLayer", "bpr_loss", "fit_bpr", "full_ranking_metrics", "lightgcn_propagate",
            "ngcf_propagate", "normalized_adjacency"]  # graph collaborative filtering (lightgcn)
__all__ += ["DCNv2", "DIN", "DeepFM", "Dice", "fm_interaction"]  # click-through-rate models (ctr)
__all__ += ["CIN", "AutoInt", "InteractingLayer", "WideAndDeep", "XDeepFM"]  # more CTR models (ctr_more)
__all__ += ["ExpertGroup", "MMoE", "PLE", "SharedBottom"]  # multi-task recommenders (multitask_rec)
__all__ += ["BERT4Rec", "GRU4Rec", "SASRec", "cloze_mask", "fit_sequential",
            "sequence_attention_mask"]  # sequential recommenders (sequential_rec)
__all__ += ["NeRF", "NeRFRenderer", "TinyNeRF", "mse_to_psnr", "nerf_train_step"]  # radiance fields (nerf)
__all__ += ["ColorNetwork", "NeuS", "SDFNetwork", "eikonal_loss", "level_set_points", "neus_render",
            "neus_train_step", "neus_weights", "surface_chamfer_distance"]  # implicit surfaces (neus)
__all__ += ["FTTransformer", "GhostBatchNorm", "IntersampleAttention", "SAINT", "TabMLP", "TabNet", "TabResNet",
            "TabTransformer", "reglu"]  # tabular data
__all__ += ["ConditionalFlowMatcher", "ExactOptimalTransportConditionalFlowMatcher", "FlowMatchingModel",
            "TargetConditionalFlowMatcher", "flow_matching_loss", "make_matcher", "optimal_assignment",
            "reflow_pairs", "sinkhorn", "squared_distances", "straightness", "wasserstein2"]  # flow matching
__all__ += ["DGCNN", "EdgeConv", "PointNet", "PointNet2", "PointNetSegmentation", "SetAbstraction", "SharedMLP",
            "TNet", "edge_features", "pointnet2_msg", "pointnet2_ssg", "transform_regularizer"]  # point clouds
__all__ += ["PointTransformerBlock", "PointTransformerClassifier", "PointTransformerLayer",
            "PointTransformerSegmentation", "TransitionDown", "TransitionUp", "interpolation_weights",
            "nearest_neighbours", "point_transformer_classifier", "point_transformer_segmentation"]  # point transformer
__all__ += ["EGNN", "SchNet"]  # equivariant graph networks
__all__ += [  # speech recognition: Conformer encoder, RNN-Transducer (conformer, transducer)
    "Conformer", "ConformerConvolution", "ConformerFeedForward", "ConformerLayer", "ConformerTransducer",
]
__all__ += ["JASPER_TINY", "QUARTZNET_TINY", "QuartzNet", "QuartzNetBlock", "TCSConv1D",  # quartznet
            "conv_output_length", "greedy_transcribe", "jasper_tiny", "quartznet_5x5", "quartznet_15x5",
            "quartznet_ctc_loss", "quartznet_tiny", "word_error_rate"]
__all__ += ["ComplEx", "DistMult", "KGEModel", "RotatE", "TransE", "corrupt_triples", "evaluate_link_prediction",
            "filtered_ranks", "fit_kge", "link_prediction_metrics", "margin_ranking_loss", "one_to_n_loss",
            "ranks_from_scores", "self_adversarial_loss"]  # knowledge-graph embeddings (kge)
__all__ += ["DeepSets", "Perceiver", "PerceiverBlock", "PerceiverEncoder", "PerceiverIO", "SetTransformer",
            "SlotAttentionAutoEncoder", "SlotReconstruction", "SoftPositionEmbed", "fourier_position_features",
            "position_grid"]  # sets, latent arrays and slots (set_models, perceiver, slot_autoencoder)
__all__ += ["Flamingo", "GatedCrossAttentionBlock", "PerceiverResampler",
            "media_attention_mask"]  # vision added to a frozen language model (flamingo)
__all__ += ["IGNORE_INDEX", "LLaVA", "SplicedInputs", "answer_labels", "freeze_for_stage",  # llava
            "llava_loss", "splice_image_tokens"]
__all__ += ["GatedPixelCNN", "GatedPixelCNNLayer", "PixelCNN", "VQVAE", "VQVAEOutput"]  # pixelcnn, vqvae
__all__ += ["AutoencoderKL", "DiagonalGaussian", "KLDecoder", "KLEncoder", "KLResidualBlock",  # latent diffusion
            "LatentDiffusion", "estimate_scaling_factor"]
__all__ += ["RWKV", "RWKVBlock", "RetNet", "RetNetLayer"]  # linear-time language models (retnet, rwkv)
__all__ += ["DnCNN", "EDSR", "EDSRResidualBlock", "ESPCN", "SRCNN", "SRResNet", "SRResNetBlock",
            "TransformerNet"]  # super-resolution, denoising, fast style transfer (super_resolution, transformer_net)
__all__ += ["AttentiveNeuralProcess", "ConditionalNeuralProcess", "GPCurves", "MultiheadCrossAttention",
            "NPTask", "NeuralProcess"]  # neural processes (neural_process, gp_curves)
__all__ += ["CapsNet", "CapsNetOutput", "capsnet_digits", "capsnet_mnist"]  # capsule networks (capsnet)
__all__ += ["CAIT_CONFIGS", "CaiT", "CaiTBlock", "ClassAttention", "ClassAttentionBlock", "LayerScale",
            "TalkingHeadsAttention", "cait", "cait_layer_scale_init", "cait_s24", "cait_tiny", "cait_xxs24",
            "cait_xxs36"]  # class-attention image transformers (cait)
__all__ += ["CLS_POSITIONS", "VIM_CONFIGS", "VimBlock", "VimMixer", "VisionMamba", "vim_small", "vim_tiny",
            "vision_mamba_parameter_count", "GatedCNNBlock"]  # Vision Mamba (vision_mamba), MambaOut (gated_cnn)
__all__ += ["CROSSVIT_CONFIGS", "CrossAttentionFusion", "CrossViT", "DeepLabV3Plus", "DeepLabV3PlusDecoder",
            "MultiScaleBlock", "SeparableASPP", "crossvit", "crossvit_9_240", "crossvit_tiny", "crossvit_tiny_240",
            "deeplabv3_plus", "deeplabv3_plus_resnet50", "deeplabv3_plus_tiny"]  # DeepLabv3+ and CrossViT
__all__ += ["RRDB", "RRDBNet", "ResidualDenseBlock", "esrgan_discriminator", "feature_l1_loss",
            "relativistic_discriminator_loss", "relativistic_generator_loss", "rrdbnet_tiny",
            "rrdbnet_x4"]  # ESRGAN (esrgan)
__all__ += ["OverlapPatchEmbed", "PVTV2_CONFIGS", "PVTv2", "PVTv2Block", "PVTv2FFN", "SpatialReductionAttention",
            "pvt_v2", "pvt_v2_b0", "pvt_v2_b1", "pvt_v2_tiny"]  # pyramid vision transformer v2 (pvt)
__all__ += ["CVT_CONFIGS", "ConvEmbed", "ConvProjectionAttention", "CvT", "CvTBlock", "cvt", "cvt_13",
            "cvt_tiny"]  # convolutional vision transformers (cvt)
__all__ += ["BEiT", "BEiTAttention", "BEiTBlock", "PatchKMeansTokenizer", "SimMIM", "VQVAETokenizer", "beit",
            "beit_base_patch16_224", "beit_block_masking", "beit_mask_blocks", "beit_mim_loss",
            "beit_relative_position_index", "beit_tiny", "simmim_loss",
            "simmim_masks"]  # masked image modelling (beit, beit_pretraining, simmim)
__all__ += ["GAE", "VGAE", "InnerProductDecoder", "Node2Vec"]  # graph autoencoders, node2vec
__all__ += ["TGN", "last_messages"]  # temporal graph networks
__all__ += ["WaveNet", "WaveNetLayer"]  # autoregressive waveform model (wavenet)
__all__ += ["DIFFWAVE_CONFIGS", "DIFFWAVE_LOSSES", "DiffWave", "DiffWaveResidualLayer", "DiffusionStepEmbedding",
            "FAST_SCHEDULE", "SpectrogramUpsampler", "align_steps", "diffwave_base", "diffwave_large",
            "diffwave_step_features", "diffwave_tiny"]  # diffusion vocoder (diffwave, diffwave_sampling)
__all__ += ["WaveRNN", "merge_coarse_fine", "split_coarse_fine"]  # dual-softmax GRU vocoder (wavernn)
__all__ += ["DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "EDMPrecond",  # diffusion samplers
            "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",  # and EDM
            "LMSDiscreteScheduler", "PNDMScheduler", "edm_loss", "edm_sampler", "karras_sigmas"]  # (schedulers)
__all__ += ["DPMSolverSinglestepScheduler", "UniPCMultistepScheduler"]  # single-step DPM-Solver, UniPC
__all__ += ["DIT_CONFIGS", "DiT", "DiTBlock", "dit_b", "dit_l", "dit_s", "dit_xl"]  # diffusion transformer (dit)
__all__ += ["ControlNet", "ControlledDenoiser", "DiTControlNet"]  # spatial control of a frozen denoiser (controlnet)
__all__ += ["CrossAttentionUNet", "SpatialCrossTransformer"]  # text conditioning (diffusion_cross_attention)
__all__ += ["CONSISTENCY_METRICS", "ConsistencyModel", "consistency_coefficients", "consistency_times",
            "ct_discretization_steps", "ct_target_decay", "gaussian_mixture_denoiser", "ict_discretization_steps",
            "lognormal_step_probabilities", "pseudo_huber_distance"]  # consistency models (consistency)
__all__ += ["DISTILLATION_WEIGHTINGS", "GuidanceDenoisingMLP", "GuidanceDenoisingUNet", "GuidanceDistilledDiffusion",
            "distillation_grid", "distillation_target", "distillation_weight", "grid_sample",
            "guidance_distillation_loss",
            "progressive_distillation_loss"]  # diffusion distillation (progressive_distillation, guidance_distillation)
__all__ += ["MaskGIT", "cosine_mask_schedule", "mask_schedule_counts",
            "masked_token_loss"]  # masked generative transformer (maskgit)
__all__ += ["D3PM", "DiscreteDiffusionLM", "MaskedDiffusion", "d3pm_betas", "d3pm_transition_matrix",
            "subs_log_probs"]  # discrete diffusion language models (discrete_diffusion)
__all__ += ["DeepSurv"]  # survival analysis (deepsurv)
__all__ += ["EchoStateNetwork", "HopfieldNetwork", "RBM", "SelfOrganizingMap"]  # energy-based, associative, reservoir
__all__ += ["ShowAttendTell"]  # image captioning with soft attention (show_attend_tell)
__all__ += ["ContractiveCell", "ContractiveConvCell", "DEQConvNet", "DEQMLP"]  # deep equilibrium classifiers (deq)
__all__ += ["PatchGANDiscriminator", "Pix2PixGenerator", "ResnetBlock", "ResnetGenerator"]  # pix2pix, cyclegan
__all__ += ["EqualizedConv2D", "EqualizedDense", "MappingNetwork", "ModulatedConv2D", "NoiseInjection",
            "PathLengthPenalty", "StyleGAN2Generator", "SynthesisLayer", "ToRGB", "modulated_conv2d",
            "pixel_norm"]  # stylegan2
__all__ += ["BIGGAN_PRESETS", "BigGANDiscriminator", "BigGANGenerator", "ProjectionHead", "biggan_small",
            "orthogonal_regularization", "truncated_normal"]  # SAGAN / BigGAN (biggan)
__all__ += ["MemN2N", "NTM", "NTMCell", "NTMState", "PointerNetwork", "circular_shift", "content_addressing",
            "erase_and_add", "interpolate", "memory_read", "pointer_logits", "position_encoding",
            "sharpen"]  # pointer and memory-augmented networks (pointer_network, memory_network, ntm)
__all__ += ["DNC", "DNCMemoryState", "DNCState", "allocation_weighting", "content_weighting", "interface_size",
            "link_update", "memory_step", "oneplus", "parse_interface", "temporal_weightings",
            "usage_update"]  # differentiable neural computer (dnc)
__all__ += ["FeatureActivity", "SAEOutput", "SparseAutoencoder"]  # dictionary learning (sparse_autoencoder)
__all__ += ["KAN"]  # Kolmogorov-Arnold networks (kan)
__all__ += ["PoincareEmbeddingResult", "balanced_tree", "reconstruction_metrics", "train_poincare_embeddings",
            "transitive_closure"]  # Poincaré embeddings of hierarchies (poincare_embeddings)
__all__ += [  # time-series classification (tsc)
    "FCN", "MINIROCKET_KERNEL_INDICES", "ConvBlock1D", "InceptionModule1D", "InceptionTime", "InceptionTimeEnsemble",
    "MiniRocket", "MultiRocket", "ResNet1D", "ResNetBlock1D", "Rocket", "RocketClassifier", "inception_kernel_sizes",
    "minirocket_dilations", "minirocket_kernels",
]
__all__ += ["ActNorm2D", "AffineCoupling2D", "BatchNormFlow", "CNF", "CNFDynamics", "CNFResult", "Glow", "GlowStep",
            "InverseAutoregressive", "InvertibleConv1x1", "PlanarFlow", "RadialFlow", "SplineAutoregressive",
            "SplineCoupling", "SplitPrior", "Squeeze2D", "dequantize"]  # more normalizing flows (glow, cnf, ...)
__all__ += ["AttentiveStatisticsPooling", "ECAPA_TDNN", "Res2NetBlock1D", "SEBlock1D", "SERes2NetBlock",
            "StatisticsPooling", "TDNNBlock", "XVector", "frame_mask",
            "masked_statistics"]  # speaker embeddings (speaker, ecapa)
__all__ += ["SimpleBaseline", "SimpleBaselineHead", "TopDownPoseEstimator",
            "simple_baseline_resnet"]  # top-down heatmap pose estimation (pose)
__all__ += ["HRNet", "HRNetModule", "hrnet_lite"]  # high-resolution networks for heatmaps (hrnet)
__all__ += ["MoCoQueue", "SwAVPrototypes"]  # MoCo queue, SwAV prototypes (self_supervised)
__all__ += ["NCSNMLP", "annealed_langevin_sample", "geometric_sigmas"]  # noise-conditional score networks (ncsn)
__all__ += ["SDE", "VESDE", "VPSDE", "ScoreSDEMLP", "euler_maruyama_predictor", "langevin_corrector", "make_sde",
            "ode_log_likelihood", "ode_sample", "pc_sample", "probability_flow_ode", "reverse_diffusion_predictor",
            "reverse_sde", "score_sde_loss", "subVPSDE"]  # score-based SDEs (score_sde, schedulers.score_sde)
__all__ += ["ConcatLibrary", "CustomLibrary", "DMD", "FeatureLibrary", "FourierLibrary", "HankelDMD",
            "KoopmanAutoencoder", "KoopmanLoss", "PolynomialLibrary", "SINDy", "SR3", "STLSQ", "TensoredLibrary",
            "finite_difference", "optimal_svht_coefficient", "savgol_derivative",
            "svd_rank"]  # data-driven dynamics (sindy, sindy_library, dmd, koopman)
__all__ += ["CFRNet", "DragonNet", "TARNet", "representation_ipm", "treatment_weights"]  # treatment effects (causal)
__all__ += ["DIGIT_CONCEPTS", "NAM", "ConceptBottleneck", "MonotonicDense", "MonotonicNetwork", "ProtoPNet",
            "PrototypeMatch", "digit_concepts", "fine_tune_last_layer", "fit_concept_bottleneck",
            "intervention_accuracy", "last_layer_l1", "prototype_cluster_cost", "prototype_distances",
            "prototype_separation_cost",
            "prototype_similarity"]  # interpretable by design (interpretable, concept_bottleneck, protopnet)
__all__ += ["EarlyExitNetwork", "EarlyExitResult"]  # early exits (early_exit)
__all__ += ["P4CNN", "p4cnn"]  # group-equivariant CNN (p4cnn)
__all__ += ["OWLViT", "OWLViTCriterion", "OWLViTOutput", "owlvit_box_bias", "owlvit_matching_cost",  # (owlvit)
            "owlvit_postprocess"]  # open-vocabulary detection
__all__ += ["CLIPSeg", "CLIPSegDecoder", "clip_position_embedding", "clipseg", "clipseg_loss", "clipseg_segment",
            "visual_prompt_images"]  # segmentation from text and image prompts (clipseg)
__all__ += ["MOBILEVIT_CONFIGS", "MobileViTBlock", "fold_patches", "mobilevit", "mobilevit_s",  # MobileViT
            "mobilevit_xs", "mobilevit_xxs", "unfold_patches"]
__all__ += ["POOLFORMER_CONFIGS", "PoolFormerBlock", "PoolingMixer", "poolformer", "poolformer_m36",  # MetaFormer
            "poolformer_m48", "poolformer_s12", "poolformer_s24", "poolformer_s36"]
__all__ += ["GaussianMixture", "HiddenMarkovModel", "KalmanFilter", "ParticleFilter", "ParticleFilterResult",
            "kalman_log_likelihood", "multinomial_resample", "stratified_resample",
            "systematic_resample"]  # HMMs, Kalman and particle filters, Gaussian mixtures (statespace)
__all__ += ["PINN", "Burgers1D", "DeepONet", "HamiltonianNN", "Heat1D", "LagrangianNN", "PDEProblem", "PINNLoss",
            "Poisson1D", "antiderivative_data", "derivative", "gradient", "hamiltonian_vector_field",
            "lagrangian_acceleration", "laplacian", "leapfrog", "mlp_network", "relative_l2_error", "stormer_verlet",
            "symplectic_euler"]  # physics-informed learning (physics)
__all__ += ["ChannelwiseLayerNorm", "ConvTasNet", "GlobalLayerNorm", "TemporalConvBlock"]  # separation (conv_tasnet)
__all__ += [  # differentiable trees for tabular data (soft_trees, node)
    "NODE", "NeuralDecisionForest", "ObliviousDecisionTrees", "SoftDecisionTree", "routing_probabilities",
]
__all__ += ["HiFiGANGenerator", "HiFiGANResBlock", "MultiPeriodDiscriminator", "MultiScaleDiscriminator",
            "NormalizedConv", "PeriodDiscriminator", "ScaleDiscriminator"]  # GAN vocoders (hifigan)
__all__ += ["HUBERT_CONFIGS", "HuBERTModel", "HuBERTOutput", "hubert", "hubert_frame_geometry", "hubert_logits",
            "hubert_loss", "hubert_mfcc_frames", "hubert_targets_from_features", "hubert_targets_from_mfcc",
            "kmeans_fit"]  # HuBERT masked prediction of clustered targets (hubert)
__all__ += ["FFTBlock", "FastSpeech2", "LengthRegulator", "PostNet", "VarianceAdaptor",  # text to speech
            "VariancePredictor", "fastspeech2_loss", "frame_energy"]  # (fastspeech2)
__all__ += ["LocationSensitiveAttention", "Tacotron2", "tacotron2_loss"]  # Tacotron 2
__all__ += ["AudioCodec", "CodecOutput", "CodecResidualUnit"]  # neural audio codec with residual VQ (audio_codec)
__all__ += ["NCATrainResult", "NeuralCA", "SelfClassifyingCA", "circle_damage_masks", "nca_perception_kernels",
            "normalize_gradients", "soft_life_step", "train_nca",
            "train_self_classifying_ca"]  # neural cellular automata (nca)
__all__ += ["RegisterTokens", "ToMeEncoder", "ViTWithRegisters", "apply_tome", "drop_registers",  # ViT add-ons
            "patch_resize_matrix", "pi_resize_matrix", "remove_tome", "resize_patch_embedding",
            "resize_position_embedding", "tome_encoder_macs", "tome_token_counts", "vit_with_registers"]
__all__ += ["GaussianImage"]  # an image as 2-D Gaussians, fitted by splatting (gaussian_image)
__all__ += ["SAMAttention", "SAMMaskDecoder", "SAMOutput", "SAMPromptEncoder", "SegmentAnything",
            "TwoWayAttentionBlock", "TwoWayTransformer", "sam_loss", "tiny_sam"]  # promptable segmentation (sam)
__all__ += ["LPIPS", "TwoAFCResult", "alexnet_features", "load_lpips_backbone", "load_lpips_weights", "lpips_loss",
            "train_lpips", "two_afc_agreement"]  # learned perceptual image similarity (lpips)
__all__ += ["NGPT", "NGPTBlock", "normalize_ngpt_weights"]  # the normalized Transformer (ngpt)
__all__ += ["BLIP2Stage1", "QFormer", "QFormerLayer", "image_text_contrastive_loss",  # BLIP-2 (qformer)
            "mine_hard_negatives", "qformer_attention_mask"]
__all__ += ["TimeSformer", "TimeSformerBlock", "VideoMAE", "VideoMAEClassifier",  # video transformers
            "sinusoid_table", "tube_masking", "tubelet_targets"]
__all__ += ["ConvNeXtV2Block", "convnextv2_atto", "convnextv2_femto", "convnextv2_nano", "convnextv2_pico",
            "convnextv2_tiny"]  # ConvNeXt V2 (convnext)
__all__ += ["RelativeMultiHeadAttention", "TransformerXL", "TransformerXLLayer", "relative_shift",
            "sinusoidal_relative_encoding"]  # segment-level recurrence (transformer_xl)
__all__ += ["TwoStreamRelativeAttention", "XLNetLM", "XLNetLayer", "bidirectional_relative_encoding",
            "partial_prediction_mask", "permutation_masks",
            "sample_factorization_order"]  # permutation language modelling (xlnet)
__all__ += ["Mask2Former", "MaskClassificationLoss", "mask_matching_cost", "masked_attention",  # mask2former
            "masked_attention_mask", "panoptic_inference", "semantic_inference"]
__all__ += ["SOLOv2", "coord_features", "dynamic_mask_logits", "matrix_nms", "solo_dice_loss",  # SOLOv2 (solo)
            "solo_focal_loss", "solo_targets", "solov2_resnet50_fpn", "solov2_tiny"]
__all__ += ["PointHead", "PointRendSemSeg", "point_sample", "point_uncertainty", "pointrend_from_segmentation",
            "uncertain_points_on_grid", "uncertain_points_with_randomness"]  # PointRend (pointrend)
__all__ += ["CenterNet", "CenterNetHead", "centernet_decode", "centernet_focal_loss", "centernet_small",
            "centernet_targets", "draw_gaussian", "gaussian_radius"]  # objects as points (centernet)
__all__ += ["YOLOX", "simota_assign", "yolox_decode", "yolox_iou_loss", "yolox_nano",  # anchor-free YOLO (yolox)
            "yolox_tiny"]
__all__ += ["CODEBOOK_PATTERNS", "MultiStreamLM", "build_pattern", "multi_stream_loss", "pattern_length",
            "pattern_mask", "pattern_positions", "revert_pattern",
            "sample_codebooks"]  # language models of parallel codebook streams (musicgen)
__all__ += ["ACTIVATION_GAMMAS", "NFBlock", "NFResNet", "ScaledActivation", "nf_resnet18", "nf_resnet34",
            "nf_resnet_cifar"]  # normalizer-free ResNets (nfnet)
__all__ += ["NFNET_F_CONFIGS", "NFBottleneck", "NFNet", "nfnet_f0", "nfnet_f1"]  # NFNet-F (nfnet_f)
__all__ += ["GHOSTNET_CONFIG", "GhostBottleneck", "GhostModule", "GhostNet", "ghostnet_0_5", "ghostnet_1_0",
            "ghostnet_1_3"]  # cheap feature maps from depthwise transforms (ghostnet)
__all__ += ["CPC", "NEGATIVE_SOURCES", "cpc_features", "cpc_info_nce",  # contrastive predictive coding (cpc)
            "cpc_negative_indices"]
__all__ += ["COATNET_0", "CoAtNet", "CoAtNetRelativeAttention", "CoAtNetTransformerBlock",  # conv + attention (coatnet)
            "coatnet_0", "coatnet_tiny"]
__all__ += ["LEVIT_128S", "LeViT", "LeViTAttention", "LeViTAttentionSubsample", "LeViTBlock",  # (levit)
            "LeViTDownsample", "LinearNorm", "levit_128s", "levit_attention_bias_index", "levit_tiny"]
__all__ += ["PSP_BINS", "PyramidPooling", "psp_head", "pspnet", "pspnet_loss", "pspnet_resnet50",  # PSPNet (pspnet)
            "pspnet_small"]
__all__ += ["UNET_PLUS_PLUS_MODES", "UNetPlusPlus", "unet_plus_plus",  # nested U-Net (unet_plus_plus)
            "unet_plus_plus_loss"]
__all__ += ["ResNeSt", "ResNeStBottleneck", "SKBlock", "SKConv", "SKNet", "SplitAttention", "resnest50",
            "resnest_tiny", "sknet50", "sknet_tiny"]  # attention over convolution branches (resnest)
__all__ += ["BART_CONFIGS", "BartAttention", "BartDecoder", "BartDecoderLayer", "BartEncoder", "BartEncoderLayer",
            "BartForConditionalGeneration", "BartModel", "bart", "shift_tokens_right"]  # BART (bart)
__all__ += ["MobileOne", "MobileOneBlock", "ReparamBlock", "RepVGG", "RepVGGBlock", "conv_bn_kernel",
            "identity_kernel", "mobileone_s0", "mobileone_s1", "mobileone_tiny", "reparameterize", "reparameterized",
            "repvgg_a0", "repvgg_a1", "repvgg_a2", "repvgg_b0", "repvgg_tiny"]  # re-parameterization (repvgg)
__all__ += ["RETRO", "RETRO_CONFIGS", "ChunkedCrossAttention", "RetroDatabase", "retro", "retro_generate",
            "retro_loss", "split_chunks"]  # RETRO (retro, retro_retrieval)
__all__ += ["NonLocalBlock", "VQGAN", "VQGANOutput", "VQGANResBlock", "VQGANTransformer", "vqgan_tiny"]  # vqgan
__all__ += ["AWDLSTM", "ULMFiTClassifier", "awd_lstm_ptb", "awd_lstm_tiny", "awd_lstm_wt2",
            "concat_pool"]  # AWD-LSTM and ULMFiT (awd_lstm)
__all__ += ["SlowFast", "SlowFastBottleneck", "SlowFastLateral", "pack_pathways", "slowfast_r50",  # (slowfast)
            "slowfast_tiny", "FactorisedSelfAttentionBlock", "TubeletEmbedding", "ViViT",  # ViViT (vivit)
            "inflate_patch_embedding", "vivit_b_16x2_fe", "vivit_tiny"]
__all__ += ["GloVe", "glove_loss", "glove_weights"]  # global word vectors (glove)
__all__ += ["PFN", "PFNTrainResult", "pfn_attention_mask", "train_pfn", "BarPrediction", "bar_borders",  # (pfn)
            "bar_log_density", "bar_mean", "bar_quantiles", "bar_tail_scales"]  # bar distribution
__all__ += ["AttentionLSTM", "MatchingNetwork", "RELATION_OBJECTIVES", "RelationNetwork", "SupportContextLSTM",
            "class_feature_sums", "episode_labels", "matching_log_probabilities",
            "relation_pairs"]  # metric-based few-shot learning (matching_network, relation_network)
__all__ += ["IWAE", "estimate_log_likelihood", "importance_log_weights",
            "iwae_loss"]  # importance-weighted autoencoders, DReG (iwae)
__all__ += ["LatentODE", "ODEFunc", "ODERNN",
            "check_irregular_batch"]  # irregular time series (latent_ode, ode_rnn)
