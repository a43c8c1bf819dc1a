#!/usr/bin/env python3
"""train_tiny.py — makes models/kvscope-tiny.gguf, the small default model that ships with kvscope.

What it is: the whole recipe in one file, with no third-party package beyond PyTorch (and
matplotlib for the loss plot):
  corpus     clean the Debian `fortunes` collections into .train/corpus.txt, train a
             SentencePiece-style BPE tokenizer on the training split, encode both splits
             (.train/ is git-ignored; it is what travels to the GPU machine)
  train      train a Llama-architecture model (RMSNorm, RoPE on adjacent pairs, grouped-query
             attention, SwiGLU, causal mask, untied output) and write it as GGUF v3 (F16 matrices,
             F32 norms), plus models/loss.png and a JSON record of the run
  reference  load the GGUF back (so the writer is tested too), run the same forward pass in
             float64 on the CPU and write tests/data/tiny_ref/ (tokens, prompt logits, greedy
             continuations) for the C engine's tests
  plot       redraw models/loss.png from a run record
  all        corpus + train + reference: the one command that reproduces the shipped files
What it is not: a general trainer or converter. The model and tokenizer conventions match what
kvscope (and llama.cpp's "llama" architecture) read, with no weight permutation: RoPE rotates
(x[2i], x[2i+1]) by pos * base^(-2i/head_dim); query head h uses K/V head h // (n_head/n_head_kv).

Runs under PyTorch 1.13 (Debian, CPU) and 2.x (CUDA).
"""
import argparse
import array
import collections
import contextlib
import hashlib
import heapq
import json
import math
import os
import random
import re
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_DIR = os.path.join(ROOT, ".train")
FORTUNE_DIR = "/usr/share/games/fortunes"
SP = "\u2581"  # SentencePiece's visible space "▁"

# Files of /usr/share/games/fortunes left out: pictures, not prose.
FORTUNE_SKIP = {"ascii-art"}

CONFIG = dict(
    vocab_size=1024,
    dim=256,
    n_layers=4,
    n_heads=8,
    n_kv_heads=4,
    ffn_dim=640,
    ctx=512,
    rope_base=10000.0,
    norm_eps=1e-5,
)

N_SPECIAL = 3    # <unk>, <s>, </s>
N_BYTES = 256    # <0x00>..<0xFF>
BOS, EOS, UNK = 1, 2, 0
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_BYTE = 1, 2, 3, 6


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------
# Corpus

def clean_fortune(text):
    """One fortune: drop overstrikes and control characters, squeeze runs of blanks, keep lines."""
    text = re.sub(r".\x08", "", text)
    text = text.replace("\r", "")
    text = "".join(ch for ch in text if ch == "\n" or ch == "\t" or ord(ch) >= 32)
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.split("\n")]
    out, blank = [], False
    for ln in lines:
        if not ln:
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(ln)
    return "\n".join(out)


def read_fortunes(d=FORTUNE_DIR):
    names = sorted(n for n in os.listdir(d)
                   if "." not in n and n not in FORTUNE_SKIP and os.path.isfile(os.path.join(d, n)))
    fortunes, used = [], []
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            raw = f.read().decode("utf-8", errors="replace")
        k = 0
        for part in re.split(r"\n%\n", "\n" + raw + "\n"):
            t = clean_fortune(part)
            if len(t) < 8 or len(t) > 2000:
                continue
            good = sum(ch.isalpha() or ch == " " for ch in t)
            if good < 0.75 * len(t):   # tables, code and pictures
                continue
            fortunes.append(t)
            k += 1
        used.append((n, k))
    return fortunes, used


# ----------------------------------------------------------------------------------------------
# Tokenizer: SentencePiece-style BPE (dummy prefix, "▁" for spaces, byte fallback).
# Encoding is the SentencePiece/llama.cpp algorithm: start from UTF-8 characters, repeatedly merge
# the adjacent pair whose concatenation is a vocabulary piece with the highest score (leftmost
# first on equal scores), then map unknown characters to their <0xXX> byte tokens. The corpus is
# encoded with exactly this, so the engine's encoder sees the segmentation the model was trained on.

def sp_normalize(text):
    return SP + text.replace(" ", SP) if text else ""


# Pre-split for learning merges only: pieces never hold "▁" except at their start, nor "\n".
PRESPLIT = re.compile(SP + r"?[^\W\d_]+(?:'[^\W\d_]+)*|" + SP + r"?\d+|" + SP + r"?[^\w\s" + SP + r"]+|" + SP + r"|[^\n]")


def train_bpe(texts, vocab_size, min_char_count=30):
    chars = collections.Counter()
    words = collections.Counter()
    for t in texts:
        s = sp_normalize(t)
        chars.update(ch for ch in s if ch != "\n")
        words.update(PRESPLIT.findall(s))
    # Characters: the common ones become pieces; the rest fall back to bytes.
    char_list = [c for c, n in sorted(chars.items(), key=lambda x: (-x[1], x[0])) if n >= min_char_count]
    if SP not in char_list:
        char_list.insert(0, SP)
    n_merges = vocab_size - N_SPECIAL - N_BYTES - len(char_list)
    assert n_merges > 0, "vocab too small for the character set"
    charset = set(char_list)
    wlist = [(list(w), n) for w, n in words.items() if all(c in charset for c in w) and len(w) > 1]
    pair_count = collections.Counter()
    where = collections.defaultdict(set)
    for i, (sym, n) in enumerate(wlist):
        for a, b in zip(sym, sym[1:]):
            pair_count[(a, b)] += n
            where[(a, b)].add(i)
    merges = []
    seen = set(char_list) | {"<unk>", "<s>", "</s>"} | {"<0x%02X>" % b for b in range(256)}
    while len(merges) < n_merges and pair_count:
        (a, b), n = max(pair_count.items(), key=lambda x: (x[1], x[0]))
        if n < 2:
            break
        ab = a + b
        if ab not in seen:
            merges.append(ab)
            seen.add(ab)
        for i in list(where[(a, b)]):
            sym, cnt = wlist[i]
            for x, y in zip(sym, sym[1:]):
                pair_count[(x, y)] -= cnt
                if pair_count[(x, y)] <= 0:
                    del pair_count[(x, y)]
            j, new = 0, []
            while j < len(sym):
                if j + 1 < len(sym) and sym[j] == a and sym[j + 1] == b:
                    new.append(ab)
                    j += 2
                else:
                    new.append(sym[j])
                    j += 1
            wlist[i] = (new, cnt)
            for x, y in zip(new, new[1:]):
                pair_count[(x, y)] += cnt
                where[(x, y)].add(i)
        pair_count.pop((a, b), None)
        where.pop((a, b), None)
    # Vocabulary: specials, bytes, merged pieces in the order learnt (score -rank: earlier
    # merges win), then single characters (lowest scores; their score never decides a merge).
    pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    scores = [0.0] * (N_SPECIAL + N_BYTES)
    types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL] + [TT_BYTE] * 256
    for r, m in enumerate(merges):
        pieces.append(m)
        scores.append(-float(r))
        types.append(TT_NORMAL)
    for k, c in enumerate(char_list):
        pieces.append(c)
        scores.append(-float(len(merges) + k))
        types.append(TT_NORMAL)
    # If fewer merges were possible than asked for, the vocabulary is smaller; pad with unused
    # control pieces so the embedding shape stays as configured.
    while len(pieces) < vocab_size:
        pieces.append("<unused%d>" % len(pieces))
        scores.append(0.0)
        types.append(TT_CONTROL)
    return Tokenizer(pieces, scores, types)


class Tokenizer:
    def __init__(self, pieces, scores, types):
        self.pieces, self.scores, self.types = list(pieces), list(scores), list(types)
        self.index = {}
        for i, (p, t) in enumerate(zip(pieces, types)):
            if t == TT_NORMAL:
                assert p not in self.index, "duplicate piece %r" % p
                self.index[p] = i
        self.byte0 = pieces.index("<0x00>")
        self._cache = {}

    def _encode_chunk(self, s):
        """The SentencePiece merge loop over one string (already normalized)."""
        sym = list(s)
        n = len(sym)
        if n == 0:
            return []
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []

        def push(i, j):
            if i < 0 or j >= n:
                return
            p = sym[i] + sym[j]
            t = self.index.get(p)
            if t is not None:
                heapq.heappush(heap, (-self.scores[t], i, j, p))

        for i in range(n - 1):
            push(i, i + 1)
        while heap:
            _, i, j, p = heapq.heappop(heap)
            if not alive[i] or not alive[j] or nxt[i] != j or sym[i] + sym[j] != p:
                continue
            sym[i] = p
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            push(prv[i], i)
            push(i, nxt[i])
        out, i = [], 0
        while i < n:
            t = self.index.get(sym[i])
            if t is not None:
                out.append(t)
            else:
                out.extend(self.byte0 + b for b in sym[i].encode("utf-8"))
            i = nxt[i]
        return out

    def encode(self, text, bos=True):
        ids = [BOS] if bos else []
        return ids + self._encode_chunk(sp_normalize(text))

    def encode_fast(self, text, bos=True):
        """Same result as encode() when no piece holds "▁" past its start or a newline (true of
        the vocabularies train_bpe makes): encodes word by word with a cache."""
        ids = [BOS] if bos else []
        for w in re.findall(SP + "?[^" + SP + "\n]*|\n", sp_normalize(text)):
            r = self._cache.get(w)
            if r is None:
                r = self._encode_chunk(w)
                self._cache[w] = r
            ids.extend(r)
        return ids

    def piece_bytes(self, t):
        if self.types[t] == TT_BYTE:
            return bytes([t - self.byte0])
        if self.types[t] == TT_NORMAL:
            return self.pieces[t].replace(SP, " ").encode("utf-8")
        return b""

    def decode(self, ids):
        b = b"".join(self.piece_bytes(t) for t in ids)
        s = b.decode("utf-8", errors="replace")
        return s[1:] if s.startswith(" ") else s


# ----------------------------------------------------------------------------------------------
# Model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)


def rope_tables(head_dim, positions, base, dtype):
    i = torch.arange(0, head_dim // 2, dtype=torch.float64)
    inv = base ** (-2.0 * i / head_dim)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]     # (T, head_dim/2)
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):
    """x: (B, T, H, hd); rotates adjacent pairs (x[2i], x[2i+1])."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    y0 = x0 * c - x1 * s
    y1 = x0 * s + x1 * c
    return torch.stack((y0, y1), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, c, dropout):
        super().__init__()
        d, h, kv = c["dim"], c["n_heads"], c["n_kv_heads"]
        self.h, self.kv, self.hd = h, kv, d // h
        self.attn_norm = RMSNorm(d, c["norm_eps"])
        self.wq = nn.Linear(d, h * self.hd, bias=False)
        self.wk = nn.Linear(d, kv * self.hd, bias=False)
        self.wv = nn.Linear(d, kv * self.hd, bias=False)
        self.wo = nn.Linear(h * self.hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, c["norm_eps"])
        self.w_gate = nn.Linear(d, c["ffn_dim"], bias=False)
        self.w_up = nn.Linear(d, c["ffn_dim"], bias=False)
        self.w_down = nn.Linear(c["ffn_dim"], d, bias=False)
        self.drop = nn.Dropout(dropout)
        self.p_drop = dropout

    def forward(self, x, cos, sin, cache=None, start=0, want_attn=False):
        B, T, _ = x.shape
        hx = self.attn_norm(x)
        q = self.wq(hx).view(B, T, self.h, self.hd)
        k = self.wk(hx).view(B, T, self.kv, self.hd)
        v = self.wv(hx).view(B, T, self.kv, self.hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            if "k" in cache:
                k = torch.cat((cache["k"], k), 1)
                v = torch.cat((cache["v"], v), 1)
            cache["k"], cache["v"] = k, v
        rep = self.h // self.kv
        q = q.transpose(1, 2)                                       # (B, H, T, hd)
        k = k.transpose(1, 2).repeat_interleave(rep, dim=1)         # (B, H, S, hd)
        v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
        S = k.shape[2]
        attn = None
        if hasattr(F, "scaled_dot_product_attention") and not want_attn and start == 0 and S == T \
                and x.dtype != torch.float64:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.p_drop if self.training else 0.0)
        else:
            sc = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            qi = torch.arange(T, device=x.device)[:, None] + start
            kj = torch.arange(S, device=x.device)[None, :]
            sc = sc.masked_fill(kj > qi, float("-inf"))
            attn = torch.softmax(sc.float(), dim=-1).to(q.dtype)
            o = self.drop(attn) @ v
        o = o.transpose(1, 2).reshape(B, T, self.h * self.hd)
        x = x + self.drop(self.wo(o))
        hx = self.ffn_norm(x)
        x = x + self.drop(self.w_down(F.silu(self.w_gate(hx)) * self.w_up(hx)))
        return x, attn


class Tiny(nn.Module):
    def __init__(self, c, dropout=0.0):
        super().__init__()
        self.c = dict(c)
        self.tok = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList(Block(c, dropout) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c["norm_eps"])
        self.out = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        self.drop = nn.Dropout(dropout)
        # RoPE tables for every position, computed in float64 once (not saved with the weights).
        cos, sin = rope_tables(c["dim"] // c["n_heads"], torch.arange(c["ctx"]), c["rope_base"],
                               torch.float64)
        self.register_buffer("rope_cos", cos, persistent=False)   # (ctx, head_dim/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for n, p in self.named_parameters():   # GPT-2 style scaled init of residual projections
            if n.endswith("wo.weight") or n.endswith("w_down.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c["n_layers"]))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx, caches=None, start=0, want_attn=False):
        B, T = idx.shape
        x = self.drop(self.tok(idx))
        cos = self.rope_cos[start:start + T].to(x.dtype)
        sin = self.rope_sin[start:start + T].to(x.dtype)
        attns = []
        for i, l in enumerate(self.layers):
            x, a = l(x, cos, sin, None if caches is None else caches[i], start, want_attn)
            attns.append(a)
        logits = self.out(self.norm(x))
        return (logits, attns) if want_attn else logits


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# GGUF v3 writer and reader (pure Python)

GT_U8, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STR, GT_ARR, GT_U64, GT_I64, GT_F64 = range(13)
GGML_F32, GGML_F16 = 0, 1
ALIGN = 32
_SCALAR = {GT_U8: "<B", GT_I8: "<b", GT_U16: "<H", GT_I16: "<h", GT_U32: "<I", GT_I32: "<i",
           GT_F32: "<f", GT_BOOL: "<?", GT_U64: "<Q", GT_I64: "<q", GT_F64: "<d"}


def _gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _gval(t, v):
    if t == GT_STR:
        return _gstr(v)
    if t == GT_ARR:
        et, items = v
        body = b"".join(_gval(et, x) for x in items)
        return struct.pack("<IQ", et, len(items)) + body
    return struct.pack(_SCALAR[t], v)


def gguf_tensors_from_model(model):
    """(name, ggml type, shape as (ne0, ne1) or (ne0,), bytes). nn.Linear (out, in) row-major is
    GGUF ne0 = in, ne1 = out, so matrices are written as they are."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = []

    def mat(name, w):
        w = w.to(torch.float16).contiguous()
        out.append((name, GGML_F16, (w.shape[1], w.shape[0]), w.numpy().tobytes()))

    def vec(name, w):
        w = w.to(torch.float32).contiguous()
        out.append((name, GGML_F32, (w.shape[0],), w.numpy().tobytes()))

    mat("token_embd.weight", sd["tok.weight"])
    for i in range(model.c["n_layers"]):
        p = "layers.%d." % i
        b = "blk.%d." % i
        vec(b + "attn_norm.weight", sd[p + "attn_norm.weight"])
        mat(b + "attn_q.weight", sd[p + "wq.weight"])
        mat(b + "attn_k.weight", sd[p + "wk.weight"])
        mat(b + "attn_v.weight", sd[p + "wv.weight"])
        mat(b + "attn_output.weight", sd[p + "wo.weight"])
        vec(b + "ffn_norm.weight", sd[p + "ffn_norm.weight"])
        mat(b + "ffn_gate.weight", sd[p + "w_gate.weight"])
        mat(b + "ffn_up.weight", sd[p + "w_up.weight"])
        mat(b + "ffn_down.weight", sd[p + "w_down.weight"])
    vec("output_norm.weight", sd["norm.weight"])
    mat("output.weight", sd["out.weight"])
    return out


def write_gguf(path, c, tok, tensors, name="kvscope-tiny"):
    kv = [
        ("general.architecture", GT_STR, "llama"),
        ("general.name", GT_STR, name),
        ("general.file_type", GT_U32, 1),          # mostly F16
        ("general.alignment", GT_U32, ALIGN),
        ("llama.vocab_size", GT_U32, c["vocab_size"]),
        ("llama.context_length", GT_U32, c["ctx"]),
        ("llama.embedding_length", GT_U32, c["dim"]),
        ("llama.block_count", GT_U32, c["n_layers"]),
        ("llama.feed_forward_length", GT_U32, c["ffn_dim"]),
        ("llama.rope.dimension_count", GT_U32, c["dim"] // c["n_heads"]),
        ("llama.attention.head_count", GT_U32, c["n_heads"]),
        ("llama.attention.head_count_kv", GT_U32, c["n_kv_heads"]),
        ("llama.attention.layer_norm_rms_epsilon", GT_F32, c["norm_eps"]),
        ("llama.rope.freq_base", GT_F32, c["rope_base"]),
        ("tokenizer.ggml.model", GT_STR, "llama"),
        ("tokenizer.ggml.tokens", GT_ARR, (GT_STR, tok.pieces)),
        ("tokenizer.ggml.scores", GT_ARR, (GT_F32, tok.scores)),
        ("tokenizer.ggml.token_type", GT_ARR, (GT_I32, tok.types)),
        ("tokenizer.ggml.bos_token_id", GT_U32, BOS),
        ("tokenizer.ggml.eos_token_id", GT_U32, EOS),
        ("tokenizer.ggml.unknown_token_id", GT_U32, UNK),
        ("tokenizer.ggml.add_bos_token", GT_BOOL, True),
        ("tokenizer.ggml.add_eos_token", GT_BOOL, False),
        ("tokenizer.ggml.add_space_prefix", GT_BOOL, True),
    ]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, v in kv:
        head += _gstr(k) + struct.pack("<I", t) + _gval(t, v)
    off, infos = 0, b""
    offsets = []
    for n, ty, shape, data in tensors:
        infos += _gstr(n) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", s) for s in shape)
        infos += struct.pack("<IQ", ty, off)
        offsets.append(off)
        off += len(data)
        off = (off + ALIGN - 1) // ALIGN * ALIGN
    blob = head + infos
    blob += b"\0" * ((-len(blob)) % ALIGN)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
        pos = 0
        for (n, ty, shape, data), o in zip(tensors, offsets):
            f.write(b"\0" * (o - pos))
            f.write(data)
            pos = o + len(data)
        f.write(b"\0" * ((-pos) % ALIGN))
    os.replace(tmp, path)


def read_gguf(path):
    with open(path, "rb") as f:
        buf = f.read()
    p = 0

    def rd(fmt):
        nonlocal p
        v = struct.unpack_from(fmt, buf, p)
        p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def rstr():
        nonlocal p
        n = rd("<Q")
        s = buf[p:p + n].decode("utf-8")
        p += n
        return s

    def rval(t):
        if t == GT_STR:
            return rstr()
        if t == GT_ARR:
            et, n = rd("<I"), rd("<Q")
            return [rval(et) for _ in range(n)]
        return rd(_SCALAR[t])

    assert buf[:4] == b"GGUF", "not a GGUF file"
    p = 4
    ver, nt, nkv = rd("<I"), rd("<Q"), rd("<Q")
    assert ver == 3
    meta = {}
    for _ in range(nkv):
        k = rstr()
        meta[k] = rval(rd("<I"))
    infos = []
    for _ in range(nt):
        n = rstr()
        nd = rd("<I")
        shape = [rd("<Q") for _ in range(nd)]
        ty, off = rd("<I"), rd("<Q")
        infos.append((n, shape, ty, off))
    align = meta.get("general.alignment", 32)
    base = (p + align - 1) // align * align
    tensors = {}
    for n, shape, ty, off in infos:
        assert off % align == 0
        cnt = 1
        for s in shape:
            cnt *= s
        dt, sz = {GGML_F32: (torch.float32, 4), GGML_F16: (torch.float16, 2)}[ty]
        raw = bytearray(buf[base + off: base + off + cnt * sz])
        t = torch.frombuffer(raw, dtype=dt).clone()
        tensors[n] = t.view(*reversed(shape)) if len(shape) > 1 else t
    return meta, tensors


def model_from_gguf(path, dtype=torch.float64):
    meta, ts = read_gguf(path)
    a = "llama."
    c = dict(vocab_size=len(meta["tokenizer.ggml.tokens"]), dim=meta[a + "embedding_length"],
             n_layers=meta[a + "block_count"], n_heads=meta[a + "attention.head_count"],
             n_kv_heads=meta[a + "attention.head_count_kv"], ffn_dim=meta[a + "feed_forward_length"],
             ctx=meta[a + "context_length"], rope_base=float(meta[a + "rope.freq_base"]),
             norm_eps=float(meta[a + "attention.layer_norm_rms_epsilon"]))
    m = Tiny(c)
    sd = {"tok.weight": ts["token_embd.weight"], "norm.weight": ts["output_norm.weight"],
          "out.weight": ts.get("output.weight", ts["token_embd.weight"])}
    names = dict(attn_norm="attn_norm", attn_q="wq", attn_k="wk", attn_v="wv", attn_output="wo",
                 ffn_norm="ffn_norm", ffn_gate="w_gate", ffn_up="w_up", ffn_down="w_down")
    for i in range(c["n_layers"]):
        for g, t in names.items():
            sd["layers.%d.%s.weight" % (i, t)] = ts["blk.%d.%s.weight" % (i, g)]
    m.load_state_dict({k: v.to(dtype) for k, v in sd.items()})
    m = m.to(dtype).eval()
    tok = Tokenizer(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"],
                    meta["tokenizer.ggml.token_type"])
    return m, tok, meta


# ----------------------------------------------------------------------------------------------
# Generation

@torch.no_grad()
def generate(model, ids, n_new, temperature=0.0, top_k=0, gen=None, device="cpu", stop_eos=True):
    """Greedy (temperature 0: argmax, lowest id on ties) or sampled continuation, with a KV cache.
    Returns (new token ids, per-step top1-top2 logit margins)."""
    caches = [dict() for _ in model.layers]
    x = torch.tensor([ids], device=device)
    logits = model(x, caches, 0)[0, -1]
    pos, out, margins = len(ids), [], []
    for _ in range(n_new):
        lf = logits.double()
        if temperature <= 0:
            t = int((lf == lf.max()).nonzero()[0, 0])
            top2 = torch.topk(lf, 2).values
            margins.append(float(top2[0] - top2[1]))
        else:
            z = lf / temperature
            if top_k:
                kth = torch.topk(z, top_k).values[-1]
                z = z.masked_fill(z < kth, float("-inf"))
            t = int(torch.multinomial(torch.softmax(z, -1).float().cpu(), 1, generator=gen))
        out.append(t)
        if stop_eos and t == EOS or pos >= model.c["ctx"]:
            break
        logits = model(torch.tensor([[t]], device=device), caches, pos)[0, -1]
        pos += 1
    return out, margins


# ----------------------------------------------------------------------------------------------
# Subcommands

def cmd_corpus(args):
    os.makedirs(TRAIN_DIR, exist_ok=True)
    t0 = time.time()
    fortunes, used = read_fortunes(args.fortunes)
    rng = random.Random(1234)
    rng.shuffle(fortunes)
    n_val = max(1, int(len(fortunes) * args.val_frac))
    val, train = fortunes[:n_val], fortunes[n_val:]
    log("fortunes: %d (train %d, held-out %d), %d chars; files: %s" % (
        len(fortunes), len(train), len(val), sum(map(len, fortunes)),
        " ".join("%s:%d" % u for u in used)))
    with open(os.path.join(TRAIN_DIR, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write("\n%\n".join(fortunes) + "\n")
    tok = train_bpe(train, CONFIG["vocab_size"])
    n_norm = sum(1 for t in tok.types if t == TT_NORMAL)
    n_char = sum(1 for p, t in zip(tok.pieces, tok.types) if t == TT_NORMAL and len(p) == 1)
    log("tokenizer: %d pieces (%d merged pieces, %d characters, 256 bytes) in %.1fs" % (
        len(tok.pieces), n_norm - n_char, n_char, time.time() - t0))
    # The word-cached encoder must equal the plain SentencePiece loop: check on a sample.
    for t in val[:300]:
        assert tok.encode_fast(t) == tok.encode(t), t
    for name, split in (("train", train), ("val", val)):
        ids = array.array("H")
        for t in split:
            ids.extend(tok.encode_fast(t))
            ids.append(EOS)
        with open(os.path.join(TRAIN_DIR, name + ".u16"), "wb") as f:
            ids.tofile(f)
        nchar = sum(map(len, split))
        log("%s: %d tokens, %.2f chars/token" % (name, len(ids), nchar / len(ids)))
    with open(os.path.join(TRAIN_DIR, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(dict(pieces=tok.pieces, scores=tok.scores, types=tok.types,
                       sources=used, n_train=len(train), n_val=len(val),
                       chars=sum(map(len, fortunes))), f, ensure_ascii=False)
    log("corpus step done in %.1fs" % (time.time() - t0))


def load_split(name):
    a = array.array("H")
    with open(os.path.join(TRAIN_DIR, name + ".u16"), "rb") as f:
        a.frombytes(f.read())
    t = torch.tensor(a, dtype=torch.long)
    starts = (t == BOS).nonzero().flatten()
    return t, starts


def windows(data, starts, idx, T):
    """Windows of T+1 tokens, each starting at a fortune's BOS (as every prompt does)."""
    return torch.stack([data[s:s + T + 1] for s in starts[idx].tolist()])


def plot_loss(rec, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    h = rec["history"]
    st = [e["step"] for e in h]
    ax.plot([s for s, _ in rec["train_curve"]], [l for _, l in rec["train_curve"]],
            color="#9ecae1", lw=0.8, label="training batches (dropout on; mean over 50 steps)")
    ax.plot(st, [e["train"] for e in h], color="#08519c", marker="o", ms=2.5, label="train (eval)")
    ax.plot(st, [e["val"] for e in h], color="#d94801", marker="o", ms=2.5, label="held-out (eval)")
    ax.axvline(rec["best_step"], color="grey", ls=":", lw=1, label="shipped (best held-out)")
    ax.set_xlabel("step (%d sequences x %d tokens)" % (rec["batch"], rec["config"]["ctx"]))
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("kvscope-tiny: %.2fM parameters, fortunes corpus" % (rec["params"] / 1e6))
    ax.set_ylim(max(0.0, min(e["train"] for e in h) - 0.3), min(8.0, h[0]["val"] + 0.2) if len(h) > 1 else None)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    log("wrote", path)


@torch.no_grad()
def attention_report(model, data, starts, device, T, n_win=16):
    """Per head, over query positions 64.. of held-out windows: the share of attention on the
    first token (BOS, the usual "sink"), on the token itself, on the previous token, and on the
    tokens between (further back than the previous token, the first excluded); and the mean
    distance looked back when the first token is left out."""
    model.eval()
    sel = torch.arange(min(n_win, len(starts))) * (len(starts) // (n_win + 1))
    x = windows(data, starts, sel, T)[:, :T].to(device)
    _, attns = model(x, want_attn=True)
    rep = []
    S = x.shape[1]
    d = (torch.arange(S)[:, None] - torch.arange(S)[None, :]).clamp(min=0).float().to(device)[64:]
    first = torch.zeros_like(d)
    first[:, 0] = 1.0
    for li, a in enumerate(attns):
        a = a.float()[:, :, 64:]           # (B, H, S-64, S)
        on_first = (a * first).sum(-1).mean((0, 2))
        on_self = (a * (d == 0)).sum(-1).mean((0, 2))
        on_prev = (a * (d == 1)).sum(-1).mean((0, 2))
        far = (a * ((d > 1) & (first == 0))).sum(-1).mean((0, 2))
        rest = a * (1 - first)
        mean_d = ((rest * d).sum(-1) / rest.sum(-1).clamp(min=1e-9)).mean((0, 2))
        for h in range(a.shape[1]):
            rep.append(dict(layer=li, head=h, first=round(float(on_first[h]), 3),
                            self=round(float(on_self[h]), 3), prev=round(float(on_prev[h]), 3),
                            further=round(float(far[h]), 3), mean_back=round(float(mean_d[h]), 1)))
    return rep


def cmd_train(args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    with open(os.path.join(TRAIN_DIR, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tok = Tokenizer(tj["pieces"], tj["scores"], tj["types"])
    c = dict(CONFIG)
    for k in ("dim", "n_layers", "ffn_dim", "ctx"):
        if getattr(args, k) is not None:
            c[k] = getattr(args, k)
    T = c["ctx"]
    tr, tr_starts = load_split("train")
    va, va_starts = load_split("val")
    tr_starts = tr_starts[tr_starts + T + 1 <= len(tr)]
    va_starts = va_starts[va_starts + T + 1 <= len(va)]
    log("train tokens %d (%d window starts), held-out tokens %d (%d window starts)" % (
        len(tr), len(tr_starts), len(va), len(va_starts)))
    model = Tiny(c, dropout=args.dropout).to(device)
    P = n_params(model)
    log("config", json.dumps(c), "params %d (%.3fM)" % (P, P / 1e6), "device", device,
        torch.cuda.get_device_name(0) if device == "cuda" else "")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    kw = dict(fused=True) if device == "cuda" else {}
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=args.wd),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=args.lr, betas=(0.9, 0.95), **kw)
    amp = device == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    tr_data = tr.to(device)
    va_data = va.to(device)
    g = torch.Generator().manual_seed(args.seed)
    # Fixed evaluation windows, so every evaluation compares like with like.
    n_ev = min(args.eval_windows, len(va_starts))
    ev_va = windows(va_data, va_starts, torch.linspace(0, len(va_starts) - 1, n_ev).long(), T)
    ev_tr = windows(tr_data, tr_starts, torch.linspace(0, len(tr_starts) - 1, n_ev).long(), T)

    @torch.no_grad()
    def evaluate(w):
        model.eval()
        tot = 0.0
        for i in range(0, len(w), 16):
            b = w[i:i + 16]
            with autocast():
                lo = model(b[:, :-1])
            tot += F.cross_entropy(lo.float().reshape(-1, lo.shape[-1]), b[:, 1:].reshape(-1),
                                   reduction="sum").item()
        model.train()
        return tot / (len(w) * T)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        q = min(1.0, (s - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * q)))

    history, train_curve, run_losses = [], [], []
    best = (float("inf"), 0, None)
    t0 = time.time()
    step = 0
    model.train()
    for step in range(1, args.steps + 1):
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step - 1)
        bi = torch.randint(0, len(tr_starts), (args.batch,), generator=g)
        b = windows(tr_data, tr_starts, bi, T)
        with autocast():
            lo = model(b[:, :-1])
        loss = F.cross_entropy(lo.float().reshape(-1, lo.shape[-1]), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_losses.append(loss.item() if step % 10 == 0 or step == 1 else None)
        if step % 50 == 0:
            xs = [v for v in run_losses[-50:] if v is not None]
            train_curve.append((step, sum(xs) / len(xs)))
        timeout = (time.time() - t0) > args.max_minutes * 60
        if step % args.eval_every == 0 or step == args.steps or timeout:
            lt, lv = evaluate(ev_tr), evaluate(ev_va)
            el = time.time() - t0
            history.append(dict(step=step, train=lt, val=lv, time=el, lr=lr_at(step - 1)))
            log("step %5d  train %.4f  held-out %.4f  lr %.2e  %.0fs" % (step, lt, lv, lr_at(step - 1), el))
            if lv < best[0]:
                best = (lv, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if timeout:
            log("time limit reached at step", step)
            break
    train_time = time.time() - t0
    model.load_state_dict(best[2])
    model.eval()
    best_h = [e for e in history if e["step"] == best[1]][0]
    log("shipping step %d: train %.4f held-out %.4f; %d steps in %.1fs" % (
        best[1], best_h["train"], best_h["val"], step, train_time))

    out_gguf = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out_gguf), exist_ok=True)
    # Samples and attention statistics from the exported (F16-rounded) weights.
    model.cpu()
    write_gguf(out_gguf, c, tok, gguf_tensors_from_model(model))
    size = os.path.getsize(out_gguf)
    log("wrote %s (%d bytes, %.2f MiB)" % (out_gguf, size, size / 2 ** 20))
    m2, tok2, _ = model_from_gguf(out_gguf, torch.float32)
    m2 = m2.to(device)
    attn = attention_report(m2, va_data, va_starts, device, T)
    samples = []
    gen = torch.Generator().manual_seed(7)
    for p in SAMPLE_PROMPTS:
        ids = tok2.encode(p)
        gr_, _ = generate(m2, ids, 80, device=device)
        sa, _ = generate(m2, ids, 80, temperature=0.8, top_k=40, gen=gen, device=device)
        samples.append(dict(prompt=p, greedy=tok2.decode(ids + gr_), sampled=tok2.decode(ids + sa)))
        log("\n--- prompt %r\n[greedy ] %s\n[sampled] %s" % (p, samples[-1]["greedy"], samples[-1]["sampled"]))
    free = []
    for _ in range(4):
        sa, _ = generate(m2, [BOS], 120, temperature=0.8, top_k=40, gen=gen, device=device)
        free.append(tok2.decode([BOS] + sa))
        log("[from BOS] %s" % free[-1])
    rec = dict(config=c, params=P, batch=args.batch, lr=args.lr, dropout=args.dropout,
               weight_decay=args.wd, steps_run=step, steps_planned=args.steps, best_step=best[1],
               train_loss=best_h["train"], val_loss=best_h["val"],
               final_train_loss=history[-1]["train"], final_val_loss=history[-1]["val"],
               train_seconds=train_time,
               device=torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
               torch=torch.__version__, gguf_bytes=size,
               gguf_sha256=hashlib.sha256(open(out_gguf, "rb").read()).hexdigest(),
               corpus=dict(sources=tj["sources"], n_train=tj["n_train"], n_val=tj["n_val"],
                           chars=tj["chars"], train_tokens=len(tr), val_tokens=len(va)),
               history=history, train_curve=train_curve, samples=samples, free_samples=free,
               attention=attn)
    rec_path = args.record or os.path.join(os.path.dirname(out_gguf), "train_record.json")
    with open(rec_path, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=1, ensure_ascii=False)
    log("wrote", rec_path)
    try:
        plot_loss(rec, args.plot)
    except ImportError as e:
        log("no loss plot (%s); run the plot subcommand where matplotlib is installed" % e)


SAMPLE_PROMPTS = ["The meaning of life is", "A man who", "Q: What do you call",
                  "Computers are", "Love is"]
# Short on purpose (the logits files hold every vocabulary entry of every prompt position), and
# chosen on the shipped model: the first two run the full 120 greedy steps, the last two end at
# EOS; the last covers byte fallback (é, à) and a newline; every greedy step's top-1 logit beats
# the runner-up by at least 0.016, so float32 engines should not flip a near-tie.
REF_PROMPTS = ["There was a young", "Oh,", "Q: What do you call", "D\u00e9j\u00e0:\n"]


def cmd_plot(args):
    with open(args.record, encoding="utf-8") as f:
        plot_loss(json.load(f), args.plot)


@torch.no_grad()
def cmd_reference(args):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.time()
    model, tok, meta = model_from_gguf(args.gguf, torch.float64)
    od = args.ref_dir
    os.makedirs(od, exist_ok=True)
    sha = hashlib.sha256(open(args.gguf, "rb").read()).hexdigest()
    V = model.c["vocab_size"]
    summary = []
    for k, p in enumerate(REF_PROMPTS):
        ids = tok.encode(p)
        logits = model(torch.tensor([ids]))[0]                       # (n_prompt, V), float64
        new, margins = generate(model, ids, args.n_greedy)
        with open(os.path.join(od, "prompt_%d.txt" % k), "w", encoding="utf-8") as f:
            f.write(p)
        with open(os.path.join(od, "tokens_%d.txt" % k), "w") as f:
            f.write("prompt_tokens %d %s\n" % (len(ids), " ".join(map(str, ids))))
            f.write("greedy_tokens %d %s\n" % (len(new), " ".join(map(str, new))))
        with open(os.path.join(od, "greedy_%d.txt" % k), "w", encoding="utf-8") as f:
            f.write(tok.decode(ids + new))
        with open(os.path.join(od, "logits_%d.txt" % k), "w") as f:
            f.write("prompt_tokens %d %s\n" % (len(ids), " ".join(map(str, ids))))
            for pos in range(len(ids)):
                f.write("pos %d input_token %d logits %s\n" % (
                    pos, ids[pos], " ".join("%.9g" % v for v in logits[pos].tolist())))
        summary.append((p, len(ids), len(new), min(margins)))
        log("prompt %d %r: %d tokens, %d greedy, smallest top-2 margin %.4f" % (k, p, len(ids), len(new), min(margins)))
        log("   ", tok.decode(ids + new).replace("\n", "\\n"))
    with open(os.path.join(od, "README.md"), "w", encoding="utf-8") as f:
        f.write(REF_README.format(sha=sha, size=os.path.getsize(args.gguf), V=V, n=args.n_greedy,
                                  table="\n".join("| %d | `%s` | %d | %d | %.4f |" % (k, p.replace("\n", "\\n"), a, b, m)
                                                  for k, (p, a, b, m) in enumerate(summary))))
    log("reference written to %s in %.1fs" % (od, time.time() - t0))


REF_README = """# tiny_ref — PyTorch reference outputs for models/kvscope-tiny.gguf

Made by `/usr/bin/python3 tools/train_tiny.py reference` (CPU, float64), which loads the GGUF
back with its own reader and runs the training script's forward pass on it. They belong to the
model file with SHA-256 `{sha}` ({size} bytes); regenerate them whenever that file changes.

For each prompt K (0..3):

- `prompt_K.txt`: the prompt text, UTF-8, no trailing newline.
- `tokens_K.txt`: line 1 `prompt_tokens N id...` — the prompt encoded with BOS (id 1) first;
  line 2 `greedy_tokens M id...` — the greedy continuation (M <= {n}): at each step the argmax of
  the last logits (lowest id on ties), fed back; it stops after emitting EOS (id 2), which is then
  the last id listed.
- `greedy_K.txt`: prompt and continuation decoded to text (leading dummy-prefix space dropped).
- `logits_K.txt`: line 1 as in tokens_K.txt; then one line per prompt position P,
  `pos P input_token T logits v_0 ... v_{{V-1}}` with V = {V}, the logits after reading
  token T at position P (printed with %.9g), i.e. the scores for the token at position P+1.

The model: Llama architecture, vocabulary 1024 (SentencePiece-style BPE with byte fallback), see
models/README.md. Agreement to expect from an engine using the same F16 weights in float32:
logits within 1e-3 relative, and every greedy token identical.

| K | prompt | prompt tokens | greedy tokens | smallest top-1 minus top-2 logit gap on the greedy path |
|---|---|---|---|---|
{table}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["corpus", "train", "reference", "plot", "all"])
    ap.add_argument("--fortunes", default=FORTUNE_DIR)
    ap.add_argument("--val-frac", type=float, default=0.05)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "kvscope-tiny.gguf"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "models", "loss.png"))
    ap.add_argument("--record", default=None, help="run record JSON (default: next to --out)")
    ap.add_argument("--gguf", default=os.path.join(ROOT, "models", "kvscope-tiny.gguf"))
    ap.add_argument("--ref-dir", default=os.path.join(ROOT, "tests", "data", "tiny_ref"))
    ap.add_argument("--n-greedy", type=int, default=120)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-windows", type=int, default=96)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--dim", type=int)
    ap.add_argument("--n-layers", dest="n_layers", type=int)
    ap.add_argument("--ffn-dim", dest="ffn_dim", type=int)
    ap.add_argument("--ctx", type=int)
    args = ap.parse_args()
    if args.cmd in ("corpus", "all"):
        cmd_corpus(args)
    if args.cmd in ("train", "all"):
        cmd_train(args)
    if args.cmd == "plot":
        cmd_plot(args)
    if args.cmd in ("reference", "all"):
        if args.cmd == "all":
            args.gguf = args.out
        cmd_reference(args)


if __name__ == "__main__":
    main()
