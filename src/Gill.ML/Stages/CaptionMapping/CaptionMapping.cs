using Gill.ML.Modules;
using System.Text.Json.Serialization;
using Gill.ML.Decoding;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Training;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.CaptionMapping;

/// <summary>
/// Trains W_cap, GILL's image-to-LM mapping (visual features → k soft visual tokens), with the captioning loss l_c
/// (spec §2.1) while everything else stays frozen.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `FeaturesColumnName` (default `ClipPooledFeatures`) | in | `Vector<Single, Dv>` |
/// | `CaptionColumnName` (default `Caption`) | in (training only) | `String` |
/// | `OutputColumnName` (default `VisualTokens`) | out | `Vector<Single, k, D>` |
///
/// | Characteristic | Value |
/// |---|---|
/// | Trains | `visual_embeddings` (W_cap) only |
/// | Loss | captioning cross-entropy over `[k visual tokens][BOS caption]` |
/// | Persistence | `mlContext.Gill().Model.Save` |
///
/// GILL trains all its mappings jointly with summed losses (`mlContext.Gill().Trainers.Gill`); training the stages one by
/// one is an approximation of that: each stage sees the other parts fixed at their current values.
/// ]]></format>
/// </remarks>
public sealed class CaptionMappingTrainer : GillEstimatorBase<CaptionMappingTransformer>
{
    internal const string Stage = "CaptionMapping";

    /// <summary>Options of the caption mapping trainer.</summary>
    public sealed class Options : GillStageTrainerOptions
    {
        /// <summary>The frozen LM and tokenizer (required unless <see cref="StartFrom"/> is given); the caller keeps ownership.</summary>
        public GillLanguageBackbone? Backbone { get; set; }

        /// <summary>A fitted GILL stage whose trained parts are the starting point (copied, not modified).</summary>
        public GillStageTransformerBase? StartFrom { get; set; }

        /// <summary>Architecture for fresh parts (default <see cref="GillConfig.Default"/>; ids come from the backbone).</summary>
        public GillConfig? Architecture { get; set; }

        /// <summary>Maximum token sequence length (BOS + caption + [IMG] tokens), GILL's <c>--max-len</c>.</summary>
        public int MaxSequenceLength { get; set; } = Defaults.MaxSequenceLength;

        /// <summary>Visual feature column.</summary>
        public string FeaturesColumnName { get; set; } = GillColumnNames.ClipPooledFeatures;

        /// <summary>Caption column (training only).</summary>
        public string CaptionColumnName { get; set; } = GillColumnNames.Caption;

        /// <summary>Output column.</summary>
        public string OutputColumnName { get; set; } = GillColumnNames.VisualTokens;

        internal override void Validate()
        {
            base.Validate();
            if (Backbone is null && StartFrom is null) throw new ArgumentException("CaptionMapping needs Options.Backbone or Options.StartFrom.", nameof(Backbone));
            if (MaxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, "MaxSequenceLength is too small.");
            foreach (var (n, v) in new[] { (nameof(FeaturesColumnName), FeaturesColumnName), (nameof(CaptionColumnName), CaptionColumnName), (nameof(OutputColumnName), OutputColumnName) })
                if (string.IsNullOrWhiteSpace(v)) throw new ArgumentException($"{n} must not be empty.", n);
        }
    }

    internal static class Defaults
    {
        public const int MaxSequenceLength = 32;
    }

    private readonly Options _options;
    private readonly GillConfig _config;
    private readonly int _embedding;

    internal CaptionMappingTrainer(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _config = options.StartFrom?.Architecture ?? options.Backbone!.Configure(options.Architecture ?? GillConfig.Default());
        _embedding = options.StartFrom?.Backbone.EmbeddingSize ?? options.Backbone!.EmbeddingSize;
        InputColumns = new[] { GillColumn.FloatVector(options.FeaturesColumnName, _config.VisualHiddenSize) };
        OutputColumns = new[] { GillColumn.FloatVector(options.OutputColumnName, _config.NVisualTokens, _embedding) };
        TrainingColumns = new[] { GillColumn.Text(options.CaptionColumnName) };
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> TrainingColumns { get; }

    /// <inheritdoc />
    protected override CaptionMappingTransformer FitCore(IDataView input)
    {
        int seed = ResolveSeed(_options.Seed);
        var parts = StageStart.Resolve(_options.Backbone, _options.StartFrom, _options.Architecture, _options.StartFrom?.MaxSequenceLength ?? _options.MaxSequenceLength, seed, Stage);
        try
        {
            var heads = parts.Core.Heads;
            var trained = heads.named_parameters().Where(p => p.name.StartsWith("visual_embeddings.", StringComparison.Ordinal)).Select(p => p.parameter).ToArray();
            var columns = InputColumns.Concat(TrainingColumns).ToArray();
            StageTraining.Run(Context, Stage, _options, seed, trained, heads.parameters().ToArray(), input, columns, batch =>
                CaptioningLoss(parts, batch.GetTensor(_options.FeaturesColumnName), batch.GetTexts(_options.CaptionColumnName), batch.Positions.ToArray(), _options.CaptionColumnName));
            return new CaptionMappingTransformer(Context, parts, _options.FeaturesColumnName, _options.OutputColumnName, _options.TransformBatchSize);
        }
        catch
        {
            parts.Release();
            throw;
        }
    }

    /// <summary>l_c: captioning cross-entropy over <c>[k visual tokens][BOS caption [IMG]… pad…]</c>.</summary>
    internal static Tensor CaptioningLoss(GillParts parts, Tensor features, IReadOnlyList<string> captions, long[] rows, string captionColumn)
    {
        var core = parts.Core;
        var (ids, _) = parts.SequenceArrays(captions, rows, Stage, captionColumn);
        int b = ids.Length, t = parts.MaxSequenceLength, k = core.Config.NVisualTokens;
        var tokens = new long[b, t];
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) tokens[i, j] = ids[i][j];
        var idTensor = torch.tensor(ids.SelectMany(s => s).ToArray(), new long[] { b, t }).to(core.Device);
        var embeds = core.EmbedTokens(idTensor);
        var visual = core.VisualTokens(features.to(core.Device)).to(embeds.dtype);
        var (labels, _) = GillSequences.CaptioningLabels(tokens, k, core.PadTokenId, core.ImgTokenIds);
        var flat = new long[labels.Length];
        Buffer.BlockCopy(labels, 0, flat, 0, flat.Length * sizeof(long));
        var labelTensor = torch.tensor(flat, new long[] { b, k + t }).to(core.Device);
        var hidden = core.LastHiddenState(torch.cat(new[] { visual, embeds }, 1));
        return GillLosses.CausalLMCrossEntropy(core.Logits, hidden, labelTensor);
    }
}

/// <summary>Applies W_cap: visual features → soft visual tokens [k, D] (see <see cref="CaptionMappingTrainer"/>).</summary>
[GillStage(CaptionMappingTrainer.Stage)]
public sealed class CaptionMappingTransformer : GillStageTransformerBase
{
    internal CaptionMappingTransformer(MLContext context, GillParts parts, string featuresColumn, string outputColumn, int batchSize)
        : base(context, CaptionMappingTrainer.Stage, batchSize, parts)
    {
        FeaturesColumnName = featuresColumn;
        OutputColumnName = outputColumn;
        InputColumns = new[] { GillColumn.FloatVector(featuresColumn, parts.Config.VisualHiddenSize) };
        OutputColumns = new[] { GillColumn.FloatVector(outputColumn, parts.Config.NVisualTokens, parts.Backbone.EmbeddingSize) };
    }

    /// <summary>Visual feature column.</summary>
    public string FeaturesColumnName { get; }

    /// <summary>Output column.</summary>
    public string OutputColumnName { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch) =>
        batch.SetOutput(OutputColumnName, Parts.Core.VisualTokens(batch.GetTensor(FeaturesColumnName)));

    /// <summary>
    /// A transformer that writes a caption for each row's visual features by decoding with the frozen LM from the k
    /// visual tokens followed by BOS (greedy by default; [IMG] tokens are never produced). It shares this stage's weights.
    /// </summary>
    public CaptioningTransformer CreateCaptioner(string outputColumnName = CaptioningTransformer.DefaultOutputColumnName, int maxNewTokens = 16) =>
        new(Context, Parts.AddRef(), FeaturesColumnName, outputColumnName, maxNewTokens, BatchSize);

    private sealed record Saved(
        [property: JsonPropertyName("featuresColumnName")] string FeaturesColumnName,
        [property: JsonPropertyName("outputColumnName")] string OutputColumnName);

    internal override object StageOptions => new Saved(FeaturesColumnName, OutputColumnName);

    internal static CaptionMappingTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, CaptionMappingTrainer.Stage);
        var o = reader.GetOptions<Saved>("stage");
        var parts = GillParts.LoadFrom(reader);
        return new CaptionMappingTransformer(reader.Context, parts, o.FeaturesColumnName, o.OutputColumnName, reader.BatchSizeOr(32));
    }
}

/// <summary>
/// Writes a caption for an image's visual features with the LM decoding from W_cap's soft visual tokens and BOS
/// (create it with <see cref="CaptionMappingTransformer.CreateCaptioner"/> or get it from a joint GILL model).
/// </summary>
[GillStage(Stage)]
public sealed class CaptioningTransformer : GillStageTransformerBase
{
    internal const string Stage = "Captioning";

    /// <summary>Default output column.</summary>
    public const string DefaultOutputColumnName = "GeneratedCaption";

    internal CaptioningTransformer(MLContext context, GillParts parts, string featuresColumn, string outputColumn, int maxNewTokens, int batchSize)
        : base(context, Stage, batchSize, parts)
    {
        if (maxNewTokens <= 0) throw new ArgumentOutOfRangeException(nameof(maxNewTokens), maxNewTokens, "maxNewTokens must be positive.");
        FeaturesColumnName = featuresColumn;
        OutputColumnName = outputColumn;
        MaxNewTokens = maxNewTokens;
        InputColumns = new[] { GillColumn.FloatVector(featuresColumn, parts.Config.VisualHiddenSize) };
        OutputColumns = new[] { GillColumn.Text(outputColumn) };
    }

    /// <summary>Visual feature column.</summary>
    public string FeaturesColumnName { get; }

    /// <summary>Caption output column.</summary>
    public string OutputColumnName { get; }

    /// <summary>Maximum generated tokens per caption.</summary>
    public int MaxNewTokens { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <summary>Generates captions for features [B, Dv] (greedy; stops at EOS).</summary>
    internal string[] Caption(Tensor features)
    {
        var core = Parts.Core;
        var backbone = Parts.Backbone;
        long b = features.shape[0];
        var visual = core.VisualTokens(features.to(core.Device));
        var bos = core.EmbedTokens(torch.full(new long[] { b, 1 }, backbone.BosTokenId, ScalarType.Int64, core.Device));
        var prompt = torch.cat(new[] { visual.to(bos.dtype), bos }, 1);
        var generated = CausalLMGenerator.GenerateFromEmbeddings(core.LanguageModel, prompt, options: new GenerationOptions
        {
            MaxNewTokens = MaxNewTokens,
            StopTokenIds = new[] { (long)backbone.EosTokenId },
            PadTokenId = backbone.PadTokenId,
            LogitsProcessor = (_, logits) => logits.MaskedFill(AllowedTokens(logits.shape[^1], logits.device).logical_not(), float.NegativeInfinity),
        });
        var rows = generated.cpu().to(ScalarType.Int64);
        var result = new string[b];
        for (int i = 0; i < b; i++)
        {
            var ids = rows[i].data<long>().ToArray().TakeWhile(id => id != backbone.EosTokenId).Select(id => (int)id);
            result[i] = backbone.Tokenizer.Decode(ids, skipSpecialTokens: true).Trim();
        }
        return result;
    }

    /// <summary>
    /// Ids the captioner may produce: tokenizer ids inside the LM's vocabulary, never the [IMG] tokens or
    /// <c>&lt;|image|&gt;</c>, nor the LM's padding rows beyond the tokenizer.
    /// </summary>
    private Tensor AllowedTokens(long vocab, Device device)
    {
        var backbone = Parts.Backbone;
        var allowed = new bool[vocab];
        int limit = (int)Math.Min(vocab, backbone.Tokenizer.Count);
        for (int i = 0; i < limit; i++) allowed[i] = true;
        foreach (var id in backbone.ImgTokenIds.Append(backbone.ImageTokenId)) if (id < vocab) allowed[id] = false;
        return torch.tensor(allowed, device: device);
    }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch)
    {
        var captions = Caption(batch.GetTensor(FeaturesColumnName));
        captions.CopyTo(batch.GetOutputTexts(OutputColumnName));
    }

    private sealed record Saved(
        [property: JsonPropertyName("featuresColumnName")] string FeaturesColumnName,
        [property: JsonPropertyName("outputColumnName")] string OutputColumnName,
        [property: JsonPropertyName("maxNewTokens")] int MaxNewTokens);

    internal override object StageOptions => new Saved(FeaturesColumnName, OutputColumnName, MaxNewTokens);

    internal static CaptioningTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, Stage);
        var o = reader.GetOptions<Saved>("stage");
        var parts = GillParts.LoadFrom(reader);
        return new CaptioningTransformer(reader.Context, parts, o.FeaturesColumnName, o.OutputColumnName, o.MaxNewTokens, reader.BatchSizeOr(32));
    }
}
