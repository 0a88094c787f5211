"""A small x-vector trained on synthetic speakers verifies held-out speakers better than raw
mean-MFCC cosine scoring; the README's speaker-verification example runs."""


import numpy as np

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import nn, optim
from lamina.data.speakers import synthetic_speakers, trial_pairs
from lamina.models.speaker import XVector
from lamina.train.speaker_metrics import cosine_scores, eer, min_dcf


def mfcc_frames(waveforms):
    """(N, samples) at 8 kHz -> MFCC (N, frames, 20): 32 ms windows every 10 ms."""
    features = F.mfcc(lamina.tensor(waveforms), sample_rate=8000, n_mfcc=20, n_fft=256, hop_length=80, n_mels=32)
    return features.numpy().transpose(0, 2, 1)


def test_xvector_trained_with_ge2e_beats_mean_mfcc_scoring():
    lamina.manual_seed(0)
    speakers, utterances = 128, 6
    train_waves, train_labels, _ = synthetic_speakers(speakers, utterances, seed=10)
    test_waves, test_labels, _ = synthetic_speakers(10, 6, seed=100)           # held-out speakers
    train, test = mfcc_frames(train_waves), mfcc_frames(test_waves)
    first, second, target = trial_pairs(test_labels)

    mean_mfcc = test.mean(axis=1)
    baseline_eer = eer(cosine_scores(mean_mfcc[first], mean_mfcc[second]), target)[0]

    mean, std = train.mean(axis=(0, 1)), train.std(axis=(0, 1))
    train, test = ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)
    model, loss = XVector(tdnn_channels=32, stats_channels=64, embedding_dim=32), nn.GE2ELoss()
    model(lamina.tensor(train[:2]))                                 # build the layers before listing parameters
    optimizer = optim.Adam(model.parameters() + loss.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):                                            # 16 speakers x 4 utterances per batch
        chosen = rng.choice(speakers, 16, replace=False)
        rows = np.stack([s * utterances + rng.choice(utterances, 4, replace=False) for s in chosen]).ravel()
        value = loss(model(lamina.tensor(train[rows])).reshape(16, 4, -1))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    model.eval()
    embeddings = model(lamina.tensor(test)).numpy()
    scores = cosine_scores(embeddings[first], embeddings[second])
    xvector_eer = eer(scores, target)[0]
    print(f"held-out EER: mean-MFCC cosine {baseline_eer:.3f}, x-vector (GE2E) {xvector_eer:.3f}; "
          f"minDCF(0.05) {min_dcf(scores, target, p_target=0.05)[0]:.3f}")
    assert xvector_eer < baseline_eer - 0.1 and xvector_eer < 0.6 * baseline_eer, (baseline_eer, xvector_eer)


def test_readme_speaker_verification_example_runs():
    _, namespace = run_readme_section("Speaker verification")
    assert 0.0 <= namespace["rate"] <= 0.5
