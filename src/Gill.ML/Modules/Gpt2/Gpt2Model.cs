using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Gpt2;

/// <summary>GPT-2's <c>Conv1D</c>: y = x·W + b with W stored [in, out].</summary>
internal sealed class Gpt2Conv1D : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter bias;

    public Gpt2Conv1D(long inFeatures, long outFeatures, Device device, ScalarType dtype) : base("Conv1D")
    {
        weight = new Parameter(torch.empty(new[] { inFeatures, outFeatures }, dtype, device));
        bias = new Parameter(torch.zeros(new[] { outFeatures }, dtype, device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var flat = x.reshape(-1, x.shape[^1]);
        var y = torch.addmm(bias, flat, weight, 1, 1);
        var shape = x.shape.ToArray();
        shape[^1] = weight.shape[1];
        return y.view(shape);
    }
}

/// <summary>GPT-2 attention (<c>GPT2Attention</c>): fused c_attn, scores scaled by 1/√head_dim.</summary>
internal sealed class Gpt2Attention : nn.Module
{
    private readonly Gpt2Conv1D c_attn, c_proj;
    private readonly long _heads, _embd;
    private readonly double _scale, _attnDrop, _residDrop;

    public Gpt2Attention(Gpt2Config c, int layerIdx, Device device, ScalarType dtype) : base("GPT2Attention")
    {
        c_attn = new Gpt2Conv1D(c.NEmbd, 3L * c.NEmbd, device, dtype);
        c_proj = new Gpt2Conv1D(c.NEmbd, c.NEmbd, device, dtype);
        _heads = c.NHead;
        _embd = c.NEmbd;
        double scale = c.ScaleAttnWeights ? Math.Pow(c.NEmbd / c.NHead, -0.5) : 1.0;
        if (c.ScaleAttnByInverseLayerIdx) scale /= layerIdx + 1;
        _scale = scale;
        _attnDrop = c.AttnPdrop;
        _residDrop = c.ResidPdrop;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor allowed, KVCache? cache, int layer)
    {
        var qkv = c_attn.forward(x).split(_embd, 2);
        var q = CausalLMCommon.SplitHeads(qkv[0], _heads) * _scale;
        var k = CausalLMCommon.SplitHeads(qkv[1], _heads);
        var v = CausalLMCommon.SplitHeads(qkv[2], _heads);
        if (cache is not null) (k, v) = CausalLMCommon.AppendToCache(cache, layer, k, v);
        var o = CausalLMCommon.Attend(q, k, v, allowed, _attnDrop, training);
        var y = c_proj.forward(CausalLMCommon.MergeHeads(o));
        return training && _residDrop > 0 ? nn.functional.dropout(y, _residDrop, true) : y;
    }
}

/// <summary>GPT-2 feed-forward block (<c>GPT2MLP</c>).</summary>
internal sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Gpt2Conv1D c_fc, c_proj;
    private readonly Func<Tensor, Tensor> _act;
    private readonly double _drop;

    public Gpt2Mlp(Gpt2Config c, Device device, ScalarType dtype) : base("GPT2MLP")
    {
        c_fc = new Gpt2Conv1D(c.NEmbd, c.Inner, device, dtype);
        c_proj = new Gpt2Conv1D(c.Inner, c.NEmbd, device, dtype);
        _act = CausalLMCommon.Activation(c.ActivationFunction);
        _drop = c.ResidPdrop;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var y = c_proj.forward(_act(c_fc.forward(x)));
        return training && _drop > 0 ? nn.functional.dropout(y, _drop, true) : y;
    }
}

/// <summary>A pre-LN GPT-2 block (<c>GPT2Block</c>).</summary>
internal sealed class Gpt2Block : nn.Module
{
    private readonly LayerNorm ln_1;
    private readonly Gpt2Attention attn;
    private readonly LayerNorm ln_2;
    private readonly Gpt2Mlp mlp;

    public Gpt2Block(Gpt2Config c, int layerIdx, Device device, ScalarType dtype) : base("GPT2Block")
    {
        ln_1 = nn.LayerNorm(c.NEmbd, c.LayerNormEpsilon, device: device, dtype: dtype);
        attn = new Gpt2Attention(c, layerIdx, device, dtype);
        ln_2 = nn.LayerNorm(c.NEmbd, c.LayerNormEpsilon, device: device, dtype: dtype);
        mlp = new Gpt2Mlp(c, device, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor h, Tensor allowed, KVCache? cache, int layer)
    {
        h = h + attn.Forward(ln_1.forward(h), allowed, cache, layer);
        return h + mlp.forward(ln_2.forward(h));
    }
}

/// <summary><c>GPT2Model</c>: token and position embeddings, blocks, ln_f.</summary>
internal sealed class Gpt2Transformer : nn.Module
{
    private readonly Embedding wte;
    private readonly Embedding wpe;
    private readonly ModuleList<Gpt2Block> h;
    private readonly LayerNorm ln_f;
    private readonly double _embdDrop;

    public Gpt2Transformer(Gpt2Config c, Device device, ScalarType dtype) : base("GPT2Model")
    {
        wte = nn.Embedding(c.VocabSize, c.NEmbd, device: device, dtype: dtype);
        wpe = nn.Embedding(c.NPositions, c.NEmbd, device: device, dtype: dtype);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, c.NLayer).Select(i => new Gpt2Block(c, i, device, dtype)).ToArray());
        ln_f = nn.LayerNorm(c.NEmbd, c.LayerNormEpsilon, device: device, dtype: dtype);
        _embdDrop = c.EmbdPdrop;
        RegisterComponents();
    }

    public Embedding Wte => wte;

    public (Tensor Last, List<Tensor>? All) Forward(Tensor inputsEmbeds, Tensor mask2d, bool maskGiven, long past, KVCache? cache, bool outputHidden, int maxPositions)
    {
        long t = inputsEmbeds.shape[1];
        Tensor positions = maskGiven
            ? (torch.cumsum(mask2d, 1) - 1).clamp_min(0).narrow(1, past, t)
            : torch.arange(past, past + t, ScalarType.Int64, mask2d.device).unsqueeze(0);
        long maxPos = positions.max().item<long>();
        if (maxPos >= maxPositions)
            throw new ArgumentException($"Sequence position {maxPos} exceeds the model's n_positions {maxPositions}.");
        var x = inputsEmbeds + wpe.forward(positions);
        if (training && _embdDrop > 0) x = nn.functional.dropout(x, _embdDrop, true);
        var allowed = CausalLMCommon.AttentionMask4D(mask2d, t, past);
        var all = outputHidden ? new List<Tensor>() : null;
        int i = 0;
        foreach (var block in h)
        {
            all?.Add(x);
            x = block.Forward(x, allowed, cache, i++);
        }
        x = ln_f.forward(x);
        all?.Add(x);
        return (x, all);
    }
}

/// <summary>
/// <c>GPT2LMHeadModel</c>: GPT-2 with lm_head tied to wte. Module keys are the Hugging Face keys (<c>transformer.…</c>);
/// the public checkpoints store them without <c>transformer.</c> and with causal-mask buffers that are skipped.
/// </summary>
internal sealed class Gpt2LMHeadModel : CausalLMModel
{
    private readonly Gpt2Transformer transformer;
    private readonly Gpt2Config _config;
    private readonly CausalLMInfo _info;

    public Gpt2LMHeadModel(Gpt2Config config, Device device, ScalarType dtype) : base("GPT2LMHeadModel")
    {
        config.Validate();
        _config = config;
        transformer = new Gpt2Transformer(config, device, dtype);
        _info = new CausalLMInfo("gpt2", config.VocabSize, config.NEmbd, config.NEmbd, config.NLayer, config.NHead,
            config.NPositions, config.BosTokenId, config.EosTokenId, config.PadTokenId);
        RegisterComponents();
        SetTrainable(false);
    }

    public override CausalLMInfo Info => _info;

    public override CausalLMConfig Config => _config;

    public override Tensor InputEmbeddingWeight => transformer.Wte.weight!;

    public override Tensor EmbedTokens(Tensor inputIds) => transformer.Wte.forward(inputIds.to(Device));

    public override CausalLMOutput forward(CausalLMInput input)
    {
        using var scope = torch.NewDisposeScope();
        var device = Device;
        var (_, _, past, mask) = CausalLMCommon.PrepareInput(input, _config.VocabSize, _config.NEmbd, device);
        if (input.Cache is { } cache && cache.NumLayers != _config.NLayer)
            throw new ArgumentException($"The KV cache has {cache.NumLayers} layers, the model {_config.NLayer}.", nameof(input));
        var embeds = input.InputIds is { } ids ? EmbedTokens(ids.to(ScalarType.Int64)) : input.InputsEmbeds!.to(DType, device);
        var (last, all) = transformer.Forward(embeds, mask, input.AttentionMask is not null, past, input.Cache, input.OutputHiddenStates, _config.NPositions);
        var logits = input.ComputeLogits ? nn.functional.linear(last, InputEmbeddingWeight) : null;
        CausalLMCommon.MoveOut(last, logits, all);
        return new CausalLMOutput { LastHiddenState = last, Logits = logits, HiddenStates = all };
    }

    internal override string ToCheckpointKey(string moduleKey, bool withPrefix) =>
        withPrefix ? moduleKey : moduleKey.StartsWith("transformer.", StringComparison.Ordinal) ? moduleKey["transformer.".Length..] : moduleKey;

    internal override bool HasPrefix(SafeTensorsCheckpoint checkpoint) =>
        checkpoint.Tensors.Keys.Any(k => k.StartsWith("transformer.", StringComparison.Ordinal));

    internal override bool IsIgnoredCheckpointKey(string key) =>
        key == "lm_head.weight" || key.EndsWith(".attn.bias", StringComparison.Ordinal) || key.EndsWith(".attn.masked_bias", StringComparison.Ordinal);

    internal override IEnumerable<(string Key, long[] Shape)> HubExtraEntries() =>
        Enumerable.Range(0, _config.NLayer).Select(i => ($"h.{i}.attn.bias", new long[] { 1, 1, _config.NPositions, _config.NPositions }));

    internal override void InitializeWeights(Generator? generator)
    {
        using var noGrad = torch.no_grad();
        double residStd = _config.InitializerRange / Math.Sqrt(2.0 * _config.NLayer);
        foreach (var (name, p) in named_parameters())
        {
            bool isNorm = name.Contains(".ln_", StringComparison.Ordinal) || name.StartsWith("transformer.ln_f.", StringComparison.Ordinal);
            if (isNorm) { if (name.EndsWith(".weight", StringComparison.Ordinal)) nn.init.ones_(p); else nn.init.zeros_(p); }
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) nn.init.zeros_(p);
            else if (name.EndsWith("c_proj.weight", StringComparison.Ordinal)) p.normal_(0, residStd, generator);
            else p.normal_(0, _config.InitializerRange, generator);   // nn.init.normal_ ignores its generator in TorchSharp 0.107
        }
    }
}
