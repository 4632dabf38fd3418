"""ADM / IDDPM U-Net, its noisy-image classifier and the super-resolution variant.

The module tree reproduces upstream's exactly, so the official checkpoints load with strict=True. Architecture
choices that no state-dict key reveals (attention layout, head split, fp16 scope, activation) are constructor
arguments that every model config states explicitly.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import AttentionHost
from .nn import (
    ADM_NORM_GROUPS,
    avg_pool_nd,
    conv_nd,
    convert_module_to_f16,
    make_activation,
    normalization,
    set_norm_groups,
    timestep_embedding,
    zero_module,
)


@dataclass(frozen=True)
class Prefix:
    """The state of a U-Net pass before a top-level block: activations, embedding and the encoder's skips so far."""

    h: torch.Tensor
    emb: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    next_block: int
    dtype: torch.dtype


class TimestepBlock(nn.Module):
    @abstractmethod
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block to x given the timestep embedding."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes the embedding to the children that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, self.channels, self.out_channels, 3, stride=stride, padding=1)
        else:
            if self.channels != self.out_channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding, optionally resampling (resblock_updown)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        up: bool = False,
        down: bool = False,
        activation: str = "silu",
    ):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels),
            make_activation(activation),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd = Upsample(channels, False, dims)
            self.x_upd = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims)
            self.x_upd = Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            make_activation(activation),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            make_activation(activation),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while emb_out.dim() < h.dim():
            emb_out = emb_out[..., None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def resolve_num_heads(channels: int, num_heads: int, num_head_channels: int) -> int:
    """Upstream rule: num_head_channels, when set (not -1), decides the head count; else num_heads."""
    if num_head_channels == -1:
        return num_heads
    if channels % num_head_channels:
        raise ValueError(f"channels {channels} are not divisible by num_head_channels {num_head_channels}")
    return channels // num_head_channels


class AttentionBlock(nn.Module):
    """Spatial self-attention; the attention product itself is delegated to `self.attention` (the seam)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.num_heads = resolve_num_heads(channels, num_heads, num_head_channels)
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.attention = AttentionHost(self.num_heads, "new" if use_new_attention_order else "legacy")
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        out = (x + h).reshape(b, c, *spatial)
        # the tokens are channel-major here; hand the next convolution the layout it was given
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling head of the official classifiers (new qkv order, mean token first)."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = conv_nd(1, embed_dim, 3 * embed_dim, 1)
        self.c_proj = conv_nd(1, embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_heads_channels
        self.attention = AttentionHost(self.num_heads, "new")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = self.c_proj(self.attention(self.qkv_proj(x)))
        return x[:, :, 0]


class _Torso(nn.Module):
    """Encoder half shared by UNetModel and EncoderUNetModel: time embedding, input blocks, middle block."""

    def _build_torso(
        self,
        in_channels: int,
        model_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float,
        channel_mult: Sequence[float],
        conv_resample: bool,
        dims: int,
        num_heads: int,
        num_head_channels: int,
        use_scale_shift_norm: bool,
        resblock_updown: bool,
        use_new_attention_order: bool,
        activation: str,
        num_classes: int | None = None,
    ) -> tuple[int, int, list[int], int]:
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim),
            make_activation(activation),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
        if num_classes is not None:  # registered here so parameter order equals upstream's
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(conv_nd(dims, in_channels, ch, 3, padding=1))]
        )
        chans = [ch]
        ds = 1
        res = dict(dims=dims, use_scale_shift_norm=use_scale_shift_norm, activation=activation)
        attn = dict(num_heads=num_heads, num_head_channels=num_head_channels,
                    use_new_attention_order=use_new_attention_order)
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [
                    ResBlock(ch, time_embed_dim, dropout, out_channels=int(mult * model_channels), **res)
                ]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                if resblock_updown:
                    block = ResBlock(ch, time_embed_dim, dropout, out_channels=ch, down=True, **res)
                else:
                    block = Downsample(ch, conv_resample, dims=dims, out_channels=ch)
                self.input_blocks.append(TimestepEmbedSequential(block))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_embed_dim, dropout, **res),
            AttentionBlock(ch, **attn),
            ResBlock(ch, time_embed_dim, dropout, **res),
        )
        return ch, input_ch, chans, ds

    @property
    def dtype(self) -> torch.dtype:
        """Torso dtype: float16 after convert_to_fp16 (or use_fp16=True), else float32."""
        return self.input_blocks[0][0].weight.dtype

    def torso_modules(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block]

    def convert_to_fp16(self) -> None:
        """Upstream's mixed precision: torso convolutions in half, everything else float32."""
        for module in self.torso_modules():
            module.apply(convert_module_to_f16)


class UNetModel(_Torso):
    """The ADM U-Net (also IDDPM's, with resblock_updown=False and activation='sigmoid_silu').

    attention_resolutions are downsample factors ds (image_size // resolution), as upstream's constructor takes them.
    norm_groups is ADM's 32 for every official checkpoint; only models trained here at small widths change it.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        activation: str = "silu",
        norm_groups: int = ADM_NORM_GROUPS,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        # Kept as given (not the true head count): SAG's official map reshape reads this attribute.
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.attention_resolutions = tuple(attention_resolutions)
        ch, input_ch, chans, ds = self._build_torso(
            in_channels, model_channels, num_res_blocks, attention_resolutions, dropout, channel_mult,
            conv_resample, dims, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
            use_new_attention_order, activation, num_classes,
        )
        time_embed_dim = model_channels * 4
        res = dict(dims=dims, use_scale_shift_norm=use_scale_shift_norm, activation=activation)
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = chans.pop()
                layers: list[nn.Module] = [
                    ResBlock(ch + skip_ch, time_embed_dim, dropout, out_channels=int(model_channels * mult), **res)
                ]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads=num_heads_upsample, num_head_channels=num_head_channels,
                                                 use_new_attention_order=use_new_attention_order))
                if level and i == num_res_blocks:
                    if resblock_updown:
                        layers.append(ResBlock(ch, time_embed_dim, dropout, out_channels=ch, up=True, **res))
                    else:
                        layers.append(Upsample(ch, conv_resample, dims=dims, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch),
            make_activation(activation),
            zero_module(conv_nd(dims, input_ch, out_channels, 3, padding=1)),
        )
        # bf16 option: the torso (input, middle and output blocks) runs under torch.autocast with this dtype; the
        # embeddings and the out head stay float32, so guidance arithmetic sees float32 outputs.
        self.autocast_dtype: torch.dtype | None = None
        set_norm_groups(self, norm_groups)
        if use_fp16:
            self.convert_to_fp16()

    def torso_modules(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block, self.output_blocks]

    def embed(self, timesteps: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError(
                "this model is class-conditional: pass labels y" if self.num_classes is not None
                else "this model is unconditional: do not pass labels y"
            )
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            if y.shape != (timesteps.shape[0],):
                raise ValueError(f"labels y must have shape ({timesteps.shape[0]},), got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        return emb

    def top_level_blocks(self) -> list[str]:
        """Names of the blocks forward runs in order; `fork_at` takes one of them."""
        return ([f"input_blocks.{i}" for i in range(len(self.input_blocks))] + ["middle_block"]
                + [f"output_blocks.{i}" for i in range(len(self.output_blocks))])

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        y: torch.Tensor | None = None,
        fork_at: str | None = None,
        fork_copies: int = 2,
        **conditioning: torch.Tensor | None,
    ) -> torch.Tensor:
        """Predict eps (and the variance interpolation value when learn_sigma).

        With `fork_at`, the batch is computed once up to that top-level block and then replicated `fork_copies`
        times (copy-major): callers that run variants differing only from that block on (PAG) save the shared prefix.
        """
        prefix = self.forward_prefix(x, timesteps, y, until=fork_at, **conditioning)
        return self.forward_from(prefix, copies=fork_copies if fork_at is not None else 1)

    def forward_prefix(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None,
                       until: str | None = None) -> Prefix:
        """Run the top-level blocks before `until` (none when None); `forward_from` finishes the pass.

        A prefix is never modified, so it can be finished several times (e.g. under different attention plans).
        """
        blocks = self.top_level_blocks()
        if until is not None and until not in blocks:
            raise ValueError(f"fork_at {until!r} is not a top-level block; choose one of {blocks}")
        stop = blocks.index(until) if until is not None else 0
        emb = self.embed(timesteps, y)
        skips: list[torch.Tensor] = []
        with self._autocast(x.device.type):
            h = self._run_blocks(x.type(self.dtype), emb, skips, 0, stop)
        return Prefix(h, emb, tuple(skips), stop, x.dtype)

    def forward_from(self, prefix: Prefix, copies: int = 1) -> torch.Tensor:
        """Finish a pass from `prefix`, on `copies` copies of its batch (copy-major)."""
        h, emb = prefix.h, prefix.emb
        if copies > 1:
            h, emb = torch.cat([h] * copies), torch.cat([emb] * copies)
        with self._autocast(h.device.type):
            h = self._run_blocks(h, emb, list(prefix.skips), prefix.next_block, len(self.top_level_blocks()))
        return self.out(h.type(prefix.dtype)).contiguous()

    def _run_blocks(self, h: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor], start: int,
                    stop: int) -> torch.Tensor:
        """Top-level blocks [start, stop): input blocks push their outputs on `skips`, output blocks pop them
        (repeated when the batch was replicated after they were pushed)."""
        inputs = len(self.input_blocks)
        blocks = [*self.input_blocks, self.middle_block, *self.output_blocks]
        for index in range(start, stop):
            if index < inputs:
                h = blocks[index](h, emb)
                skips.append(h)
            elif index == inputs:
                h = blocks[index](h, emb)
            else:
                skip = skips.pop()
                if skip.shape[0] != h.shape[0]:
                    skip = torch.cat([skip] * (h.shape[0] // skip.shape[0]))
                h = blocks[index](torch.cat([h, skip], dim=1), emb)
        return h

    def _autocast(self, device_type: str) -> torch.autocast | nullcontext:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type, dtype=self.autocast_dtype)


class SuperResModel(UNetModel):
    """U-Net conditioned on a low-resolution image, bilinearly upsampled and concatenated to the input."""

    def __init__(self, image_size: int, in_channels: int, *args, **kwargs):
        super().__init__(image_size, in_channels * 2, *args, **kwargs)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, low_res: torch.Tensor | None = None,
                y: torch.Tensor | None = None, **fork: object) -> torch.Tensor:
        return super().forward(x, timesteps, y=y, low_res=low_res, **fork)

    def forward_prefix(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None,
                       until: str | None = None, low_res: torch.Tensor | None = None) -> Prefix:
        if low_res is None:
            raise ValueError("SuperResModel needs low_res (the base samples, NCHW in [-1, 1])")
        upsampled = F.interpolate(low_res, x.shape[2:], mode="bilinear")
        return super().forward_prefix(torch.cat([x, upsampled], dim=1), timesteps, y, until)


class EncoderUNetModel(_Torso):
    """The noisy-image classifier: the U-Net's encoder half followed by a pooling head."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        pool: str = "adaptive",
        activation: str = "silu",
        norm_groups: int = ADM_NORM_GROUPS,
    ):
        super().__init__()
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.pool = pool
        ch, _, _, ds = self._build_torso(
            in_channels, model_channels, num_res_blocks, attention_resolutions, dropout, channel_mult,
            conv_resample, dims, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
            use_new_attention_order, activation,
        )
        if pool == "adaptive":
            self.out = nn.Sequential(
                normalization(ch), make_activation(activation), nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(conv_nd(dims, ch, out_channels, 1)), nn.Flatten(),
            )
        elif pool == "attention":
            if num_head_channels == -1:
                raise ValueError("pool='attention' needs num_head_channels")
            self.out = nn.Sequential(
                normalization(ch), make_activation(activation),
                AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels),
            )
        else:
            raise ValueError(f"unsupported classifier pool {pool!r}; choose 'adaptive' or 'attention'")
        set_norm_groups(self, norm_groups)
        if use_fp16:
            self.convert_to_fp16()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.type(x.dtype))
