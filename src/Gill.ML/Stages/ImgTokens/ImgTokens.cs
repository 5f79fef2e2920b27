using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Training;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.ImgTokens;

/// <summary>
/// Learns the r [IMG] token embeddings E_img with GILL's [IMG]-production loss l_p (spec §2.1: text-only pass over
/// <c>[BOS caption [IMG0..r-1] pad…]</c>, labels keep the caption and [IMG0]), re-normalising the rows to the mean
/// frozen embedding norm after every step; everything else stays frozen. The transformer outputs the LM's last-layer
/// hidden states at the [IMG] positions.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `CaptionColumnName` (default `Caption`) | in | `String` |
/// | `OutputColumnName` (default `ImgHiddenStates`) | out | `Vector<Single, r, D>` |
///
/// | Characteristic | Value |
/// |---|---|
/// | Trains | `img_token_embeddings` (E_img) only |
/// | Errors | empty caption; caption longer than `MaxSequenceLength` − 1 − r tokens (both name column and row) |
/// | Persistence | `mlContext.Gill().Model.Save` (records the tokenizer additions) |
///
/// In GILL E_img also receives gradients from the retrieval and generation losses (joint training,
/// `mlContext.Gill().Trainers.Gill`); this stage is the staged approximation.
/// ]]></format>
/// </remarks>
public sealed class ImgTokenTrainer : GillEstimatorBase<ImgTokenTransformer>
{
    internal const string Stage = "ImgTokens";

    /// <summary>Options of the [IMG] token trainer.</summary>
    public sealed class Options : GillStageTrainerOptions
    {
        /// <summary>The frozen LM and tokenizer (required unless <see cref="StartFrom"/> is given); the caller keeps ownership.</summary>
        public GillLanguageBackbone? Backbone { get; set; }

        /// <summary>A fitted GILL stage whose trained parts are the starting point (copied).</summary>
        public GillStageTransformerBase? StartFrom { get; set; }

        /// <summary>Architecture for fresh parts (ids come from the backbone).</summary>
        public GillConfig? Architecture { get; set; }

        /// <summary>Maximum token sequence length (BOS + caption + [IMG] tokens).</summary>
        public int MaxSequenceLength { get; set; } = 32;

        /// <summary>Caption column.</summary>
        public string CaptionColumnName { get; set; } = GillColumnNames.Caption;

        /// <summary>Output column.</summary>
        public string OutputColumnName { get; set; } = GillColumnNames.ImgHiddenStates;

        internal override void Validate()
        {
            base.Validate();
            if (Backbone is null && StartFrom is null) throw new ArgumentException("ImgTokens needs Options.Backbone or Options.StartFrom.", nameof(Backbone));
            if (MaxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, "MaxSequenceLength is too small.");
            if (string.IsNullOrWhiteSpace(CaptionColumnName)) throw new ArgumentException("CaptionColumnName must not be empty.", nameof(CaptionColumnName));
            if (string.IsNullOrWhiteSpace(OutputColumnName)) throw new ArgumentException("OutputColumnName must not be empty.", nameof(OutputColumnName));
        }
    }

    private readonly Options _options;

    internal ImgTokenTrainer(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        var config = options.StartFrom?.Architecture ?? options.Backbone!.Configure(options.Architecture ?? GillConfig.Default());
        int d = options.StartFrom?.Backbone.EmbeddingSize ?? options.Backbone!.EmbeddingSize;
        InputColumns = new[] { GillColumn.Text(options.CaptionColumnName) };
        OutputColumns = new[] { GillColumn.FloatVector(options.OutputColumnName, config.NumTokens, d) };
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override ImgTokenTransformer FitCore(IDataView input)
    {
        int seed = ResolveSeed(_options.Seed);
        var parts = StageStart.Resolve(_options.Backbone, _options.StartFrom, _options.Architecture, _options.StartFrom?.MaxSequenceLength ?? _options.MaxSequenceLength, seed, Stage);
        try
        {
            var heads = parts.Core.Heads;
            StageTraining.Run(Context, Stage, _options, seed, new[] { heads.ImgTokenEmbeddings }, heads.parameters().ToArray(), input, InputColumns,
                batch => TextLoss(parts, batch.GetTexts(_options.CaptionColumnName), batch.Positions.ToArray(), _options.CaptionColumnName),
                () => parts.Core.RenormalizeImgTokenEmbeddings());
            return new ImgTokenTransformer(Context, parts, _options.CaptionColumnName, _options.OutputColumnName, _options.TransformBatchSize);
        }
        catch
        {
            parts.Release();
            throw;
        }
    }

    /// <summary>l_p: the text-only pass's cross-entropy (caption tokens and [IMG0] are targets).</summary>
    internal static Tensor TextLoss(GillParts parts, IReadOnlyList<string> captions, long[] rows, string column)
    {
        var core = parts.Core;
        var (ids, _) = parts.SequenceArrays(captions, rows, Stage, column);
        int b = ids.Length, t = parts.MaxSequenceLength;
        var tokens = new long[b, t];
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) tokens[i, j] = ids[i][j];
        var (labels, _) = GillSequences.TextLabels(tokens, core.PadTokenId);
        GillSequences.MaskNonFirstImgTokens(labels, core.PadTokenId, core.ImgTokenIds);
        var flat = new long[labels.Length];
        Buffer.BlockCopy(labels, 0, flat, 0, flat.Length * sizeof(long));
        var idTensor = torch.tensor(ids.SelectMany(s => s).ToArray(), new long[] { b, t }).to(core.Device);
        var hidden = core.LastHiddenState(core.EmbedTokens(idTensor));
        return GillLosses.CausalLMCrossEntropy(core.Logits, hidden, torch.tensor(flat, new long[] { b, t }).to(core.Device));
    }
}

/// <summary>Caption → the LM's hidden states at the r [IMG] positions [r, D] (see <see cref="ImgTokenTrainer"/>).</summary>
[GillStage(ImgTokenTrainer.Stage)]
public sealed class ImgTokenTransformer : GillStageTransformerBase
{
    internal ImgTokenTransformer(MLContext context, GillParts parts, string captionColumn, string outputColumn, int batchSize)
        : base(context, ImgTokenTrainer.Stage, batchSize, parts)
    {
        CaptionColumnName = captionColumn;
        OutputColumnName = outputColumn;
        InputColumns = new[] { GillColumn.Text(captionColumn) };
        OutputColumns = new[] { GillColumn.FloatVector(outputColumn, parts.Config.NumTokens, parts.Backbone.EmbeddingSize) };
    }

    /// <summary>Caption column.</summary>
    public string CaptionColumnName { get; }

    /// <summary>Output column.</summary>
    public string OutputColumnName { get; }

    /// <summary>The [IMG] ids this stage appends to captions.</summary>
    public IReadOnlyList<int> ImgTokenIds => Parts.Config.ImgTokenIds;

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch) =>
        batch.SetOutput(OutputColumnName, Parts.ImgHiddenStates(batch.GetTexts(CaptionColumnName), batch.Positions.ToArray(), StageName, CaptionColumnName));

    private sealed record Saved(
        [property: JsonPropertyName("captionColumnName")] string CaptionColumnName,
        [property: JsonPropertyName("outputColumnName")] string OutputColumnName);

    internal override object StageOptions => new Saved(CaptionColumnName, OutputColumnName);

    internal static ImgTokenTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, ImgTokenTrainer.Stage);
        var o = reader.GetOptions<Saved>("stage");
        return new ImgTokenTransformer(reader.Context, GillParts.LoadFrom(reader), o.CaptionColumnName, o.OutputColumnName, reader.BatchSizeOr(32));
    }
}
