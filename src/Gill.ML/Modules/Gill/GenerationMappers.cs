using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Modules;

/// <summary>
/// f_ω: maps the r [IMG] hidden states h and their input embeddings e (both [B, r, D]) to the generator's conditioning
/// sequence [B, L, out]. Every kind first sums x = h + e, as GILL's <c>TextFcLayer</c> does.
/// </summary>
internal abstract class GenerationMapper : nn.Module<Tensor, Tensor, Tensor>
{
    protected GenerationMapper(string name) : base(name) { }

    /// <summary>Which architecture this is.</summary>
    public abstract GillMapperKind Kind { get; }

    /// <summary>Builds the mapper <paramref name="config"/> asks for, reading D from <paramref name="inputDim"/>.</summary>
    public static GenerationMapper Create(GillConfig config, int inputDim)
    {
        int m = config.MapperHiddenDim, r = config.NumTokens, l = config.NumClipTokens, o = config.GenEmbDim;
        return config.TextFcMode switch
        {
            GillMapperKind.GillMapper => new GillMapperModule(inputDim, m, o, l, config.MapperNumHeads,
                config.MapperNumEncoderLayers, config.MapperNumDecoderLayers, config.EffectiveMapperFfnDim),
            GillMapperKind.Linear => new LinearMapper(inputDim, m, o, r, l),
            GillMapperKind.Mlp => new MlpMapper(inputDim, m, o, r, l),
            GillMapperKind.EncoderOnlyTransformer => new EncoderOnlyMapper(inputDim, m, o, r, l, config.MapperNumHeads,
                config.MapperNumEncoderLayers, config.EffectiveMapperFfnDim),
            _ => throw new ArgumentOutOfRangeException(nameof(config), config.TextFcMode, "Unknown generation mapper kind."),
        };
    }

    protected static void CheckInputs(Tensor h, Tensor e, long inputDim)
    {
        if (h.dim() != 3 || h.shape[2] != inputDim)
            throw new ArgumentException($"[IMG] hidden states must be [B, r, {inputDim}], got {Serialization.SafeTensors.FormatShape(h.shape)}.");
        if (!e.shape.SequenceEqual(h.shape))
            throw new ArgumentException($"[IMG] input embeddings {Serialization.SafeTensors.FormatShape(e.shape)} must match the hidden states {Serialization.SafeTensors.FormatShape(h.shape)}.");
    }
}

/// <summary>
/// GILLMapper (spec §1.4): x = fc(h + e); y = tfm(src = x, tgt = query_embs repeated over the batch);
/// out = model(y). Keys: <c>fc.*</c>, <c>tfm.encoder.layers.N.*</c>, <c>tfm.encoder.norm.*</c>,
/// <c>tfm.decoder.layers.N.*</c>, <c>tfm.decoder.norm.*</c>, <c>model.*</c>, <c>query_embs</c>.
/// </summary>
internal sealed class GillMapperModule : GenerationMapper
{
    [ComponentName(Name = "fc")] private readonly Linear fc;
    [ComponentName(Name = "tfm")] private readonly PreLnTransformer tfm;
    [ComponentName(Name = "model")] private readonly Linear model;
    [ComponentName(Name = "query_embs")] private readonly Parameter queryEmbs;
    private readonly long _inputDim;

    public GillMapperModule(int inputDim, int hidden, int outDim, int numQueries, int heads, int encoderLayers, int decoderLayers, int ffn)
        : base("GILLMapper")
    {
        _inputDim = inputDim;
        fc = nn.Linear(inputDim, hidden);
        tfm = new PreLnTransformer(encoderLayers, decoderLayers, hidden, heads, ffn);
        model = nn.Linear(hidden, outDim);
        queryEmbs = new Parameter(torch.randn(1, numQueries, hidden));
        RegisterComponents();
    }

    public override GillMapperKind Kind => GillMapperKind.GillMapper;

    public override Tensor forward(Tensor h, Tensor e)
    {
        CheckInputs(h, e, _inputDim);
        using var scope = torch.NewDisposeScope();
        var x = fc.forward(h + e);
        var q = queryEmbs.expand(x.shape[0], -1, -1);
        return model.forward(tfm.forward(x, q)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Token-axis projection r → L shared by the ablation mappers: <c>token_proj</c> = Linear(r, L) applied to
/// [B, r, m] along the token axis, giving [B, L, m].
/// </summary>
internal static class TokenProjection
{
    public static Tensor Apply(Linear tokenProj, Tensor x) =>
        tokenProj.forward(x.transpose(1, 2)).transpose(1, 2);
}

/// <summary>Linear ablation: fc (D→m) per token, token_proj (r→L), model (m→out). Entirely linear.</summary>
internal sealed class LinearMapper : GenerationMapper
{
    [ComponentName(Name = "fc")] private readonly Linear fc;
    [ComponentName(Name = "token_proj")] private readonly Linear tokenProj;
    [ComponentName(Name = "model")] private readonly Linear model;
    private readonly long _inputDim;

    public LinearMapper(int inputDim, int hidden, int outDim, int numInputTokens, int numOutputTokens) : base("LinearMapper")
    {
        _inputDim = inputDim;
        fc = nn.Linear(inputDim, hidden);
        tokenProj = nn.Linear(numInputTokens, numOutputTokens);
        model = nn.Linear(hidden, outDim);
        RegisterComponents();
    }

    public override GillMapperKind Kind => GillMapperKind.Linear;

    public override Tensor forward(Tensor h, Tensor e)
    {
        CheckInputs(h, e, _inputDim);
        using var scope = torch.NewDisposeScope();
        var x = fc.forward(h + e);
        return model.forward(TokenProjection.Apply(tokenProj, x)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// 3-layer MLP ablation: fc (D→m), LeakyReLU, hidden (m→m), LeakyReLU per token, token_proj (r→L), model (m→out).
/// </summary>
internal sealed class MlpMapper : GenerationMapper
{
    [ComponentName(Name = "fc")] private readonly Linear fc;
    [ComponentName(Name = "hidden")] private readonly Linear hidden;
    [ComponentName(Name = "token_proj")] private readonly Linear tokenProj;
    [ComponentName(Name = "model")] private readonly Linear model;
    private readonly long _inputDim;

    public MlpMapper(int inputDim, int hiddenDim, int outDim, int numInputTokens, int numOutputTokens) : base("MlpMapper")
    {
        _inputDim = inputDim;
        fc = nn.Linear(inputDim, hiddenDim);
        hidden = nn.Linear(hiddenDim, hiddenDim);
        tokenProj = nn.Linear(numInputTokens, numOutputTokens);
        model = nn.Linear(hiddenDim, outDim);
        RegisterComponents();
    }

    public override GillMapperKind Kind => GillMapperKind.Mlp;

    public override Tensor forward(Tensor h, Tensor e)
    {
        CheckInputs(h, e, _inputDim);
        using var scope = torch.NewDisposeScope();
        var x = F.leaky_relu(fc.forward(h + e), 0.01);
        x = F.leaky_relu(hidden.forward(x), 0.01);
        return model.forward(TokenProjection.Apply(tokenProj, x)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Encoder-only Transformer ablation: fc (D→m), a bidirectional pre-LN encoder over the r states (GILLMapper's encoder
/// layer, final LayerNorm, no positions: the summed E_img rows tell the tokens apart), token_proj (r→L), model (m→out).
/// </summary>
internal sealed class EncoderOnlyMapper : GenerationMapper
{
    [ComponentName(Name = "fc")] private readonly Linear fc;
    [ComponentName(Name = "encoder")] private readonly PreLnEncoder encoder;
    [ComponentName(Name = "token_proj")] private readonly Linear tokenProj;
    [ComponentName(Name = "model")] private readonly Linear model;
    private readonly long _inputDim;

    public EncoderOnlyMapper(int inputDim, int hidden, int outDim, int numInputTokens, int numOutputTokens, int heads, int layers, int ffn)
        : base("EncoderOnlyMapper")
    {
        _inputDim = inputDim;
        fc = nn.Linear(inputDim, hidden);
        encoder = new PreLnEncoder(layers, hidden, heads, ffn);
        MapperInit.XavierMatrices(encoder);
        tokenProj = nn.Linear(numInputTokens, numOutputTokens);
        model = nn.Linear(hidden, outDim);
        RegisterComponents();
    }

    public override GillMapperKind Kind => GillMapperKind.EncoderOnlyTransformer;

    public override Tensor forward(Tensor h, Tensor e)
    {
        CheckInputs(h, e, _inputDim);
        using var scope = torch.NewDisposeScope();
        var x = encoder.forward(fc.forward(h + e));
        return model.forward(TokenProjection.Apply(tokenProj, x)).MoveToOuterDisposeScope();
    }
}
