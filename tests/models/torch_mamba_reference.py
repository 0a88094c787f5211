"""A PyTorch Mamba written from Hugging Face's MambaForCausalLM's module names and its
sequential ("slow") forward: an RMSNorm (torch_rms_norm's, as MambaRMSNorm), MambaMixer
(in_proj, a causal depthwise conv1d, x_proj, dt_proj, A_log, D, out_proj, the scan as a loop
over the steps), MambaBlock (norm and mixer with a residual), MambaModel (embeddings, layers,
norm_f) and a tied lm_head; to check lamina's Mamba against."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_rms_norm import RMSNorm


class MambaMixer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        hidden, self.ssm_state_size = config["hidden_size"], config["state_size"]
        self.intermediate_size = config.get("expand", 2) * hidden
        self.conv_kernel_size = config.get("conv_kernel", 4)
        self.time_step_rank = math.ceil(hidden / 16)
        use_bias = config.get("use_bias", False)
        self.in_proj = nn.Linear(hidden, 2 * self.intermediate_size, bias=use_bias)
        self.conv1d = nn.Conv1d(self.intermediate_size, self.intermediate_size, self.conv_kernel_size,
                                groups=self.intermediate_size, padding=self.conv_kernel_size - 1,
                                bias=config.get("use_conv_bias", True))
        self.x_proj = nn.Linear(self.intermediate_size, self.time_step_rank + 2 * self.ssm_state_size, bias=False)
        self.dt_proj = nn.Linear(self.time_step_rank, self.intermediate_size, bias=True)
        a = torch.arange(1, self.ssm_state_size + 1, dtype=torch.float32)[None, :].expand(self.intermediate_size, -1)
        self.A_log = nn.Parameter(torch.log(a) + 0.1 * torch.randn(a.shape))
        self.D = nn.Parameter(1.0 + 0.2 * torch.randn(self.intermediate_size))
        self.out_proj = nn.Linear(self.intermediate_size, hidden, bias=use_bias)

    def forward(self, input_states):
        batch_size, seq_len, _ = input_states.shape
        projected_states = self.in_proj(input_states).transpose(1, 2)
        hidden_states, gate = projected_states.chunk(2, dim=1)
        hidden_states = nn.functional.silu(self.conv1d(hidden_states)[..., :seq_len])
        ssm_parameters = self.x_proj(hidden_states.transpose(1, 2))
        time_step, B, C = torch.split(
            ssm_parameters, [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        discrete_time_step = nn.functional.softplus(self.dt_proj(time_step)).transpose(1, 2)
        A = -torch.exp(self.A_log)
        discrete_A = torch.exp(A[None, :, None, :] * discrete_time_step[:, :, :, None])
        discrete_B = discrete_time_step[:, :, :, None] * B[:, None, :, :]
        deltaB_u = discrete_B * hidden_states[:, :, :, None]
        ssm_state = torch.zeros(batch_size, self.intermediate_size, self.ssm_state_size, dtype=input_states.dtype)
        scan_outputs = []
        for i in range(seq_len):
            ssm_state = discrete_A[:, :, i, :] * ssm_state + deltaB_u[:, :, i, :]
            scan_outputs.append(torch.matmul(ssm_state, C[:, i, :].unsqueeze(-1))[:, :, 0])
        scan_output = torch.stack(scan_outputs, dim=-1)
        scan_output = scan_output + hidden_states * self.D[None, :, None]
        scan_output = scan_output * nn.functional.silu(gate)
        return self.out_proj(scan_output.transpose(1, 2))


class MambaBlock(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.norm = RMSNorm(config["hidden_size"], config.get("layer_norm_epsilon", 1e-5))
        self.mixer = MambaMixer(config)

    def forward(self, hidden_states):
        return hidden_states + self.mixer(self.norm(hidden_states))


class MambaModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.embeddings = nn.Embedding(config["vocab_size"], config["hidden_size"])
        self.layers = nn.ModuleList([MambaBlock(config) for _ in range(config["num_hidden_layers"])])
        self.norm_f = RMSNorm(config["hidden_size"], config.get("layer_norm_epsilon", 1e-5))

    def forward(self, input_ids):
        hidden_states = self.embeddings(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.norm_f(hidden_states)


class MambaForCausalLM(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.backbone = MambaModel(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        if config.get("tie_word_embeddings", True):
            self.lm_head.weight = self.backbone.embeddings.weight

    def forward(self, input_ids, labels=None):
        logits = self.lm_head(self.backbone(input_ids))
        if labels is None:
            return logits
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return logits, loss
