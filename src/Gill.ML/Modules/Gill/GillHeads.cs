using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// Every trainable tensor of GILL (about 50M parameters at full size), under the original checkpoint's names without
/// the leading <c>model.</c>:
/// <list type="bullet">
/// <item><c>visual_embeddings</c>: W_cap = Linear(Dv, k·D), reshaped to k visual tokens.</item>
/// <item><c>img_token_embeddings</c>: E_img [r, D], the [IMG0..r-1] rows of the tied input/output embedding.</item>
/// <item><c>ret_text_hidden_fcs.0.model</c>: W_t2i = Linear(D, p) on the [IMG0] hidden state.</item>
/// <item><c>visual_fc</c>: W_i2t = Linear(Dv, p) on the visual feature.</item>
/// <item><c>logit_scale</c>: the learnable log inverse temperature (scalar, init ln(1/0.07)).</item>
/// <item><c>gen_text_hidden_fcs.0</c>: the generation mapper f_ω (GILLMapper or an ablation).</item>
/// </list>
/// The module always holds float32 weights (the frozen language model may use another dtype).
/// </summary>
public sealed class GillHeads : nn.Module
{
    [ComponentName(Name = "visual_embeddings")] private readonly Linear visualEmbeddings;
    [ComponentName(Name = "img_token_embeddings")] private readonly Parameter imgTokenEmbeddings;
    [ComponentName(Name = "ret_text_hidden_fcs")] private readonly ModuleList<RetrievalTextHead> retTextHiddenFcs;
    [ComponentName(Name = "visual_fc")] private readonly Linear visualFc;
    [ComponentName(Name = "logit_scale")] private readonly Parameter logitScale;
    [ComponentName(Name = "gen_text_hidden_fcs")] private readonly ModuleList<GenerationMapper> genTextHiddenFcs;

    /// <summary>Builds freshly initialised heads for a language model whose input embeddings are <paramref name="lmEmbeddingDim"/> wide.</summary>
    /// <param name="config">Architecture (validated here).</param>
    /// <param name="lmEmbeddingDim">D: the language model's input embedding width (OPT: <c>word_embed_proj_dim</c>).</param>
    /// <param name="seed">When given, the initial weights are drawn from a generator seeded with it (the global torch RNG is left untouched).</param>
    public GillHeads(GillConfig config, int lmEmbeddingDim, long? seed = null) : base("GILLHeads")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (lmEmbeddingDim <= 0) throw new ArgumentOutOfRangeException(nameof(lmEmbeddingDim), lmEmbeddingDim, "The language model embedding width must be positive.");
        Config = config.Clone();
        EmbeddingDim = lmEmbeddingDim;

        (visualEmbeddings, imgTokenEmbeddings, retTextHiddenFcs, visualFc, logitScale, genTextHiddenFcs) = GlobalRandom.Maybe(seed, () => (
            nn.Linear(config.VisualHiddenSize, (long)config.NVisualTokens * lmEmbeddingDim),
            new Parameter(torch.randn(config.NumTokens, lmEmbeddingDim) * 0.02),
            new ModuleList<RetrievalTextHead>(new RetrievalTextHead(lmEmbeddingDim, config.RetEmbDim)),
            nn.Linear(config.VisualHiddenSize, config.RetEmbDim),
            new Parameter(torch.tensor((float)Math.Log(1 / 0.07))),
            new ModuleList<GenerationMapper>(GenerationMapper.Create(config, lmEmbeddingDim))), restore: true);
        RegisterComponents();
        // Parameters created while a caller's dispose scope is open must outlive it.
        foreach (var p in parameters()) p.DetachFromDisposeScope();
    }

    /// <summary>The architecture these heads were built for.</summary>
    public GillConfig Config { get; }

    /// <summary>D: the language model's input embedding width.</summary>
    public int EmbeddingDim { get; }

    /// <summary>E_img [r, D].</summary>
    public Parameter ImgTokenEmbeddings => imgTokenEmbeddings;

    /// <summary>The learnable log inverse temperature (scalar).</summary>
    public Parameter LogitScale => logitScale;

    internal GenerationMapper Mapper => genTextHiddenFcs[0];

    internal RetrievalTextHead RetrievalText => retTextHiddenFcs[0];

    /// <summary>W_cap: visual features [B, Dv] → k soft visual tokens [B, k, D] (float32).</summary>
    public Tensor VisualTokens(Tensor visualFeatures)
    {
        CheckFeatures(visualFeatures);
        using var scope = torch.NewDisposeScope();
        var v = visualEmbeddings.forward(visualFeatures.to(ScalarType.Float32));
        return v.reshape(v.shape[0], Config.NVisualTokens, -1).MoveToOuterDisposeScope();
    }

    /// <summary>Unnormalised W_i2t output [B, p] (the original's stored retrieval matrix rows).</summary>
    public Tensor ImageRetrievalProjection(Tensor visualFeatures)
    {
        CheckFeatures(visualFeatures);
        return visualFc.forward(visualFeatures.to(ScalarType.Float32));
    }

    /// <summary>Unnormalised W_t2i output [B, p] for the [IMG] hidden states [B, r, D] (uses [IMG0]).</summary>
    public Tensor TextRetrievalProjection(Tensor imgHiddenStates) =>
        retTextHiddenFcs[0].forward(imgHiddenStates.to(ScalarType.Float32));

    /// <summary>
    /// f_ω(h + e): [IMG] hidden states [B, r, D] and their input embeddings [B, r, D] → conditioning [B, L, out].
    /// </summary>
    public Tensor MapGeneration(Tensor imgHiddenStates, Tensor imgInputEmbeddings) =>
        genTextHiddenFcs[0].forward(imgHiddenStates.to(ScalarType.Float32), imgInputEmbeddings.to(ScalarType.Float32));

    /// <summary>Rescales every E_img row to L2 norm <paramref name="targetNorm"/> (in place, no autograd).</summary>
    public void RenormalizeImgTokenEmbeddings(double targetNorm)
    {
        if (!(targetNorm > 0) || double.IsInfinity(targetNorm))
            throw new ArgumentOutOfRangeException(nameof(targetNorm), targetNorm, "The target norm must be positive and finite.");
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var norms = imgTokenEmbeddings.norm(1, keepdim: true, p: 2);
        imgTokenEmbeddings.mul_(targetNorm / norms);
    }

    /// <summary>Trainable tensors under their original names (the keys <see cref="GillWeights.Save"/> writes).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedTrainableParameters() =>
        named_parameters().Select(p => (p.name, p.parameter));

    private void CheckFeatures(Tensor visualFeatures)
    {
        if (visualFeatures.dim() != 2 || visualFeatures.shape[1] != Config.VisualHiddenSize)
            throw new ArgumentException($"Visual features must be [B, {Config.VisualHiddenSize}] (visual_hidden_size), got {SafeTensors.FormatShape(visualFeatures.shape)}.");
    }
}
