using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Clip;

/// <summary>Patch, class and position embeddings of the vision tower (HF <c>CLIPVisionEmbeddings</c>).</summary>
internal sealed class ClipVisionEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly ClipVisionConfig _config;

    [ComponentName(Name = "class_embedding")] private readonly Parameter classEmbedding;
    [ComponentName(Name = "patch_embedding")] private readonly Conv2d patchEmbedding;
    [ComponentName(Name = "position_embedding")] private readonly Embedding positionEmbedding;

    public ClipVisionEmbeddings(ClipVisionConfig config) : base(nameof(ClipVisionEmbeddings))
    {
        _config = config;
        classEmbedding = nn.Parameter(torch.randn(config.HiddenSize));
        patchEmbedding = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize, bias: false);
        positionEmbedding = nn.Embedding(config.NumPositions, config.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = torch.NewDisposeScope();
        long b = pixelValues.shape[0];
        var patches = patchEmbedding.forward(pixelValues.to(patchEmbedding.weight!.dtype)); // [B, D, g, g]
        patches = patches.flatten(2).transpose(1, 2);                                    // [B, g*g, D]
        var cls = classEmbedding.expand(b, 1, -1);
        var x = torch.cat([cls, patches], 1);
        var positions = torch.arange(_config.NumPositions, dtype: ScalarType.Int64, device: x.device);
        x = x + positionEmbedding.forward(positions).unsqueeze(0);
        return x.MoveToOuterDisposeScope();
    }

    internal void Initialize()
    {
        double factor = _config.InitializerFactor;
        ClipInit.Normal(classEmbedding, Math.Pow(_config.HiddenSize, -0.5) * factor);
        ClipInit.Normal(patchEmbedding.weight!, _config.InitializerRange * factor);
        ClipInit.Normal(positionEmbedding.weight!, _config.InitializerRange * factor);
    }
}

/// <summary>Raw outputs of a tower's transformer, before any projection.</summary>
internal readonly record struct ClipTowerOutput(Tensor LastHiddenState, Tensor Pooled, Tensor Penultimate, Tensor Embeddings, List<Tensor>? HiddenStates);

/// <summary>The vision transformer (HF <c>CLIPVisionTransformer</c>, stored under <c>vision_model.</c>).</summary>
internal sealed class ClipVisionTransformer : nn.Module
{
    [ComponentName(Name = "embeddings")] private readonly ClipVisionEmbeddings embeddings;
    [ComponentName(Name = "pre_layrnorm")] private readonly LayerNorm preLayrnorm;
    [ComponentName(Name = "encoder")] private readonly ClipEncoder encoder;
    [ComponentName(Name = "post_layernorm")] private readonly LayerNorm postLayernorm;

    public ClipVisionConfig Config { get; }

    public ClipVisionTransformer(ClipVisionConfig config) : base(nameof(ClipVisionTransformer))
    {
        Config = config;
        embeddings = new ClipVisionEmbeddings(config);
        preLayrnorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        encoder = new ClipEncoder(config.NumHiddenLayers, config.HiddenSize, config.NumAttentionHeads, config.IntermediateSize, config.HiddenAct, config.LayerNormEps);
        postLayernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the tower. Hidden states (collected when asked) start with the pre-layer-normed embeddings, as in HF; the
    /// penultimate state is always returned. The pooled output is the post-layer-normed class token.
    /// </summary>
    public ClipTowerOutput Run(Tensor pixelValues, bool allHiddenStates)
    {
        var emb = embeddings.forward(pixelValues);
        var x = preLayrnorm.forward(emb);
        emb.Dispose();
        var states = allHiddenStates ? new List<Tensor>(Config.NumHiddenLayers + 1) : null;
        var (last, penultimate) = encoder.Forward(x, null, states);
        using var cls = last.select(1, 0);
        var pooled = postLayernorm.forward(cls);
        return new ClipTowerOutput(last, pooled, penultimate, x, states);
    }

    internal void Initialize()
    {
        embeddings.Initialize();
        ClipInit.LayerNorm(preLayrnorm);
        encoder.Initialize(Config.HiddenSize, Config.InitializerFactor);
        ClipInit.LayerNorm(postLayernorm);
    }
}

/// <summary>Token and position embeddings of the text tower (HF <c>CLIPTextEmbeddings</c>).</summary>
internal sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly ClipTextConfig _config;

    [ComponentName(Name = "token_embedding")] private readonly Embedding tokenEmbedding;
    [ComponentName(Name = "position_embedding")] private readonly Embedding positionEmbedding;

    public ClipTextEmbeddings(ClipTextConfig config) : base(nameof(ClipTextEmbeddings))
    {
        _config = config;
        tokenEmbedding = nn.Embedding(config.VocabSize, config.HiddenSize);
        positionEmbedding = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor inputIds)
    {
        using var scope = torch.NewDisposeScope();
        long t = inputIds.shape[1];
        var positions = torch.arange(t, dtype: ScalarType.Int64, device: inputIds.device);
        var x = tokenEmbedding.forward(inputIds) + positionEmbedding.forward(positions).unsqueeze(0);
        return x.MoveToOuterDisposeScope();
    }

    internal void Initialize()
    {
        ClipInit.Normal(tokenEmbedding.weight!, _config.InitializerRange * _config.InitializerFactor);
        ClipInit.Normal(positionEmbedding.weight!, _config.InitializerRange * _config.InitializerFactor);
    }
}

/// <summary>The text transformer (HF <c>CLIPTextTransformer</c>, stored under <c>text_model.</c>).</summary>
internal sealed class ClipTextTransformer : nn.Module
{
    [ComponentName(Name = "embeddings")] private readonly ClipTextEmbeddings embeddings;
    [ComponentName(Name = "encoder")] private readonly ClipEncoder encoder;
    [ComponentName(Name = "final_layer_norm")] private readonly LayerNorm finalLayerNorm;

    public ClipTextConfig Config { get; }

    public ClipTextTransformer(ClipTextConfig config) : base(nameof(ClipTextTransformer))
    {
        Config = config;
        embeddings = new ClipTextEmbeddings(config);
        encoder = new ClipEncoder(config.NumHiddenLayers, config.HiddenSize, config.NumAttentionHeads, config.IntermediateSize, config.HiddenAct, config.LayerNormEps);
        finalLayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the tower with a causal mask (and the padding mask when given). The last hidden state is final-layer-normed;
    /// the pooled output is its row at each sequence's end-of-text position (see <see cref="ClipTextConfig.EosTokenId"/>).
    /// Hidden states hold the embeddings and then each layer's output, the last one before the final layer norm, as in HF.
    /// </summary>
    public ClipTowerOutput Run(Tensor inputIds, Tensor? attentionMask, bool allHiddenStates)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        var eosPositions = EosPositions(inputIds);
        var x = embeddings.forward(inputIds);
        Tensor masked;
        using (var scope = torch.NewDisposeScope())
        {
            var causal = torch.ones(t, t, dtype: ScalarType.Bool, device: inputIds.device).triu(1).view(1, 1, t, t);
            if (attentionMask is not null)
            {
                var keyPad = attentionMask.to(inputIds.device).eq(0).view(b, 1, 1, t);
                causal = causal.logical_or(keyPad);
            }
            masked = causal.MoveToOuterDisposeScope();
        }
        var states = allHiddenStates ? new List<Tensor>(Config.NumHiddenLayers + 1) : null;
        var (last, penultimate) = encoder.Forward(x, masked, states);
        masked.Dispose();
        var normed = finalLayerNorm.forward(last);
        Tensor pooled;
        using (var scope = torch.NewDisposeScope())
        {
            var rows = torch.arange(b, dtype: ScalarType.Int64, device: normed.device);
            pooled = normed.index([rows, eosPositions.to(normed.device)]).MoveToOuterDisposeScope();
        }
        eosPositions.Dispose();
        if (states is null) last.Dispose();
        return new ClipTowerOutput(normed, pooled, penultimate, x, states);
    }

    /// <summary>
    /// The pooling positions, by Hugging Face's rule: argmax of the ids when eos_token_id is 2 (legacy configs, where the
    /// real end-of-text id is the largest in the vocabulary); otherwise the first position holding eos_token_id.
    /// </summary>
    internal Tensor EosPositions(Tensor inputIds)
    {
        using var scope = torch.NewDisposeScope();
        Tensor pos;
        if (Config.EosTokenId == 2)
            pos = inputIds.to(ScalarType.Int64).argmax(-1);
        else
        {
            var isEos = inputIds.eq(Config.EosTokenId);
            var has = isEos.any(-1);
            if (!has.all().item<bool>())
            {
                var rows = has.logical_not().nonzero().view(-1).cpu().data<long>().ToArray();
                throw new ArgumentException(
                    $"input_ids row(s) {string.Join(", ", rows)} hold no end-of-text token (eos_token_id {Config.EosTokenId}); CLIP pools at that token.", nameof(inputIds));
            }
            pos = isEos.to(ScalarType.Int32).argmax(-1);
        }
        return pos.MoveToOuterDisposeScope();
    }

    internal void Initialize()
    {
        embeddings.Initialize();
        encoder.Initialize(Config.HiddenSize, Config.InitializerFactor);
        ClipInit.LayerNorm(finalLayerNorm);
    }
}

/// <summary>
/// The root module of a CLIP checkpoint: any subset of <c>vision_model</c>, <c>visual_projection</c>, <c>text_model</c>,
/// <c>text_projection</c> and <c>logit_scale</c>, under exactly those Hugging Face key names (absent parts are null and
/// not registered).
/// </summary>
internal sealed class ClipRoot : nn.Module
{
    [ComponentName(Name = "text_model")] private readonly ClipTextTransformer? textModel;
    [ComponentName(Name = "vision_model")] private readonly ClipVisionTransformer? visionModel;
    [ComponentName(Name = "visual_projection")] private readonly Linear? visualProjection;
    [ComponentName(Name = "text_projection")] private readonly Linear? textProjection;
    [ComponentName(Name = "logit_scale")] private readonly Parameter? logitScale;

    public ClipRoot(ClipVisionConfig? vision, bool withVisualProjection, ClipTextConfig? text, bool withTextProjection, double? logitScaleInit,
        int? projectionDim = null)
        : base("CLIPModel")
    {
        if (vision is not null)
        {
            visionModel = new ClipVisionTransformer(vision);
            if (withVisualProjection) visualProjection = nn.Linear(vision.HiddenSize, projectionDim ?? vision.ProjectionDim, hasBias: false);
        }
        if (text is not null)
        {
            textModel = new ClipTextTransformer(text);
            if (withTextProjection) textProjection = nn.Linear(text.HiddenSize, projectionDim ?? text.ProjectionDim, hasBias: false);
        }
        if (logitScaleInit is double init) logitScale = nn.Parameter(torch.tensor((float)init));
        RegisterComponents();
    }

    public ClipVisionTransformer? Vision => visionModel;
    public Linear? VisualProjection => visualProjection;
    public ClipTextTransformer? Text => textModel;
    public Linear? TextProjection => textProjection;
    public Parameter? LogitScale => logitScale;

    /// <summary>Hugging Face's random initialisation (<c>CLIPPreTrainedModel._init_weights</c>).</summary>
    internal void Initialize()
    {
        visionModel?.Initialize();
        textModel?.Initialize();
        if (visualProjection is not null)
            ClipInit.Normal(visualProjection.weight!, Math.Pow(visionModel!.Config.HiddenSize, -0.5) * visionModel.Config.InitializerFactor);
        if (textProjection is not null)
            ClipInit.Normal(textProjection.weight!, Math.Pow(textModel!.Config.HiddenSize, -0.5) * textModel.Config.InitializerFactor);
    }

    /// <summary>
    /// The int64 <c>position_ids</c> buffers that Hugging Face CLIP checkpoints store (name, length). They are not module
    /// state here (positions are computed), but a saved folder carries them so that it has the layout of the published
    /// checkpoints.
    /// </summary>
    internal IEnumerable<(string Key, int Length)> PositionIdBuffers()
    {
        if (textModel is not null) yield return ("text_model.embeddings.position_ids", textModel.Config.MaxPositionEmbeddings);
        if (visionModel is not null) yield return ("vision_model.embeddings.position_ids", visionModel.Config.NumPositions);
    }

    /// <summary>Every tensor of the checkpoint layout as <c>key [shape]</c> lines, sorted by key (approval files).</summary>
    internal IEnumerable<string> DescribeCheckpoint()
    {
        var lines = Serialization.WeightLoader.DescribeStateDict(this)
            .Concat(PositionIdBuffers().Select(p => $"{p.Key} {Serialization.SafeTensors.FormatShape([1L, p.Length])}"));
        return lines.OrderBy(l => l.Split(' ')[0], StringComparer.Ordinal);
    }
}
