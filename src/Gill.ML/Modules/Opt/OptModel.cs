using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Opt;

/// <summary>OPT self-attention (<c>OPTAttention</c>): q is scaled by head_dim^-0.5 before q·kᵀ.</summary>
internal sealed class OptAttention : nn.Module
{
    private readonly Linear k_proj, v_proj, q_proj, out_proj;
    private readonly long _heads;
    private readonly double _scaling, _dropout;

    public OptAttention(OptConfig c, Device device, ScalarType dtype) : base(nameof(OptAttention))
    {
        k_proj = nn.Linear(c.HiddenSize, c.HiddenSize, c.EnableBias, device, dtype);
        v_proj = nn.Linear(c.HiddenSize, c.HiddenSize, c.EnableBias, device, dtype);
        q_proj = nn.Linear(c.HiddenSize, c.HiddenSize, c.EnableBias, device, dtype);
        out_proj = nn.Linear(c.HiddenSize, c.HiddenSize, c.EnableBias, device, dtype);
        _heads = c.NumAttentionHeads;
        _scaling = Math.Pow(c.HiddenSize / c.NumAttentionHeads, -0.5);
        _dropout = c.AttentionDropout;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor allowed, KVCache? cache, int layer)
    {
        var q = CausalLMCommon.SplitHeads(q_proj.forward(x) * _scaling, _heads);
        var k = CausalLMCommon.SplitHeads(k_proj.forward(x), _heads);
        var v = CausalLMCommon.SplitHeads(v_proj.forward(x), _heads);
        if (cache is not null) (k, v) = CausalLMCommon.AppendToCache(cache, layer, k, v);
        var o = CausalLMCommon.Attend(q, k, v, allowed, _dropout, training);
        return out_proj.forward(CausalLMCommon.MergeHeads(o));
    }
}

/// <summary>One OPT decoder layer (<c>OPTDecoderLayer</c>), pre-LN or post-LN.</summary>
internal sealed class OptDecoderLayer : nn.Module
{
    private readonly OptAttention self_attn;
    private readonly LayerNorm self_attn_layer_norm;
    private readonly Linear fc1, fc2;
    private readonly LayerNorm final_layer_norm;
    private readonly Func<Tensor, Tensor> _act;
    private readonly bool _preLn;
    private readonly double _dropout;

    public OptDecoderLayer(OptConfig c, Device device, ScalarType dtype) : base(nameof(OptDecoderLayer))
    {
        self_attn = new OptAttention(c, device, dtype);
        self_attn_layer_norm = nn.LayerNorm(c.HiddenSize, 1e-5, c.LayerNormElementwiseAffine, true, device, dtype);
        fc1 = nn.Linear(c.HiddenSize, c.FfnDim, c.EnableBias, device, dtype);
        fc2 = nn.Linear(c.FfnDim, c.HiddenSize, c.EnableBias, device, dtype);
        final_layer_norm = nn.LayerNorm(c.HiddenSize, 1e-5, c.LayerNormElementwiseAffine, true, device, dtype);
        _act = CausalLMCommon.Activation(c.ActivationFunction);
        _preLn = c.DoLayerNormBefore;
        _dropout = c.Dropout;
        RegisterComponents();
    }

    private Tensor Drop(Tensor x) => training && _dropout > 0 ? nn.functional.dropout(x, _dropout, true) : x;

    public Tensor Forward(Tensor h, Tensor allowed, KVCache? cache, int layer)
    {
        var residual = h;
        if (_preLn) h = self_attn_layer_norm.forward(h);
        h = residual + Drop(self_attn.Forward(h, allowed, cache, layer));
        if (!_preLn) h = self_attn_layer_norm.forward(h);
        residual = h;
        if (_preLn) h = final_layer_norm.forward(h);
        h = residual + Drop(fc2.forward(_act(fc1.forward(h))));
        if (!_preLn) h = final_layer_norm.forward(h);
        return h;
    }
}

/// <summary>The OPT decoder (<c>OPTDecoder</c>): token and learned position embeddings, layers, final norm, projections.</summary>
internal sealed class OptDecoder : nn.Module
{
    private readonly Embedding embed_tokens;
    private readonly Embedding embed_positions;
    private readonly Linear? project_out;
    private readonly Linear? project_in;
    private readonly LayerNorm? final_layer_norm;
    private readonly ModuleList<OptDecoderLayer> layers;

    /// <summary>Learned position embeddings are indexed from 2 (rows 0 and 1 are the padding-era offset).</summary>
    public const int PositionOffset = 2;

    public OptDecoder(OptConfig c, Device device, ScalarType dtype) : base(nameof(OptDecoder))
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.WordEmbedProjDim, c.PadTokenId is int p && p >= 0 && p < c.VocabSize ? p : null, device: device, dtype: dtype);
        embed_positions = nn.Embedding(c.MaxPositionEmbeddings + PositionOffset, c.HiddenSize, device: device, dtype: dtype);
        if (c.WordEmbedProjDim != c.HiddenSize)
        {
            project_out = nn.Linear(c.HiddenSize, c.WordEmbedProjDim, false, device, dtype);
            project_in = nn.Linear(c.WordEmbedProjDim, c.HiddenSize, false, device, dtype);
        }
        if (c.HasFinalLayerNorm)
            final_layer_norm = nn.LayerNorm(c.HiddenSize, 1e-5, c.LayerNormElementwiseAffine, true, device, dtype);
        layers = new ModuleList<OptDecoderLayer>(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new OptDecoderLayer(c, device, dtype)).ToArray());
        RegisterComponents();
    }

    public Embedding EmbedTokensModule => embed_tokens;

    public IEnumerable<OptDecoderLayer> Layers => layers;

    public (Tensor Last, List<Tensor>? All) Forward(Tensor inputsEmbeds, Tensor mask2d, long past, KVCache? cache, bool outputHidden, int maxPositions)
    {
        long t = inputsEmbeds.shape[1];
        var positions = (torch.cumsum(mask2d, 1) * mask2d - 1).narrow(1, past, t);
        long maxPos = positions.max().item<long>();
        if (maxPos >= maxPositions)
            throw new ArgumentException($"Sequence position {maxPos} exceeds the model's max_position_embeddings {maxPositions}.");
        var h = project_in is null ? inputsEmbeds : project_in.forward(inputsEmbeds);
        h = h + embed_positions.forward(positions + PositionOffset);
        var allowed = CausalLMCommon.AttentionMask4D(mask2d, t, past);
        var all = outputHidden ? new List<Tensor>() : null;
        int i = 0;
        foreach (var layer in layers)
        {
            all?.Add(h);
            h = layer.Forward(h, allowed, cache, i++);
        }
        if (final_layer_norm is not null) h = final_layer_norm.forward(h);
        if (project_out is not null) h = project_out.forward(h);
        all?.Add(h);
        return (h, all);
    }
}

/// <summary>Holds the decoder so that module keys read <c>model.decoder.*</c> (<c>OPTModel</c>).</summary>
internal sealed class OptBackbone : nn.Module
{
    private readonly OptDecoder decoder;

    public OptBackbone(OptConfig c, Device device, ScalarType dtype) : base("OPTModel")
    {
        decoder = new OptDecoder(c, device, dtype);
        RegisterComponents();
    }

    public OptDecoder Decoder => decoder;
}

/// <summary>
/// <c>OPTForCausalLM</c>: the OPT decoder with the output projection tied to <c>embed_tokens</c>. Module keys are the
/// Hugging Face keys (<c>model.decoder.…</c>).
/// </summary>
internal sealed class OptForCausalLM : CausalLMModel
{
    private readonly OptBackbone model;
    private readonly OptConfig _config;
    private readonly CausalLMInfo _info;

    public OptForCausalLM(OptConfig config, Device device, ScalarType dtype) : base("OPTForCausalLM")
    {
        config.Validate();
        _config = config;
        model = new OptBackbone(config, device, dtype);
        _info = new CausalLMInfo("opt", config.VocabSize, config.HiddenSize, config.WordEmbedProjDim, config.NumHiddenLayers,
            config.NumAttentionHeads, config.MaxPositionEmbeddings, config.BosTokenId, config.EosTokenId, config.PadTokenId);
        RegisterComponents();
        SetTrainable(false);
    }

    public override CausalLMInfo Info => _info;

    public override CausalLMConfig Config => _config;

    public override Tensor InputEmbeddingWeight => model.Decoder.EmbedTokensModule.weight!;

    public override Tensor EmbedTokens(Tensor inputIds) => model.Decoder.EmbedTokensModule.forward(inputIds.to(Device));

    public override CausalLMOutput forward(CausalLMInput input)
    {
        using var scope = torch.NewDisposeScope();
        var device = Device;
        var (_, _, past, mask) = CausalLMCommon.PrepareInput(input, _config.VocabSize, _config.WordEmbedProjDim, device);
        if (input.Cache is { } cache && cache.NumLayers != _config.NumHiddenLayers)
            throw new ArgumentException($"The KV cache has {cache.NumLayers} layers, the model {_config.NumHiddenLayers}.", nameof(input));
        var embeds = input.InputIds is { } ids ? EmbedTokens(ids.to(ScalarType.Int64)) : input.InputsEmbeds!.to(DType, device);
        var (last, all) = model.Decoder.Forward(embeds, mask, past, input.Cache, input.OutputHiddenStates, _config.MaxPositionEmbeddings);
        var logits = input.ComputeLogits ? nn.functional.linear(last, InputEmbeddingWeight) : null;
        CausalLMCommon.MoveOut(last, logits, all);
        return new CausalLMOutput { LastHiddenState = last, Logits = logits, HiddenStates = all };
    }

    internal override string ToCheckpointKey(string moduleKey, bool withPrefix) =>
        withPrefix ? moduleKey : moduleKey.StartsWith("model.", StringComparison.Ordinal) ? moduleKey["model.".Length..] : moduleKey;

    internal override bool HasPrefix(SafeTensorsCheckpoint checkpoint) =>
        checkpoint.Tensors.Keys.Any(k => k.StartsWith("model.decoder.", StringComparison.Ordinal));

    internal override bool IsIgnoredCheckpointKey(string key) => key == "lm_head.weight";

    internal override void InitializeWeights(Generator? generator)
    {
        using var noGrad = torch.no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("layer_norm.weight", StringComparison.Ordinal)) nn.init.ones_(p);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) nn.init.zeros_(p);
            else p.normal_(0, _config.InitStd, generator);   // nn.init.normal_ ignores its generator in TorchSharp 0.107
        }
        if (_config.PadTokenId is int pad && pad >= 0 && pad < _config.VocabSize)
            InputEmbeddingWeight[pad].zero_();
    }
}
