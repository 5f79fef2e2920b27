using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Training;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.Retrieval;

/// <summary>
/// Trains GILL's retrieval projections W_t2i (on the [IMG0] hidden state) and W_i2t (on the visual feature) and the
/// learnable temperature with the symmetric InfoNCE loss l_r (directions averaged, as the released code), everything
/// else frozen. Outputs are L2-normalised p-dimensional embeddings; their dot product is the cosine similarity.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `ImgHiddenStatesColumnName` (default `ImgHiddenStates`) | in | `Vector<Single, r, D>` |
/// | `FeaturesColumnName` (default `ClipPooledFeatures`) | in | `Vector<Single, Dv>` |
/// | `TextEmbeddingColumnName` (default `TextRetrievalEmbedding`) | out | `Vector<Single, p>` |
/// | `ImageEmbeddingColumnName` (default `ImageRetrievalEmbedding`) | out | `Vector<Single, p>` |
///
/// | Characteristic | Value |
/// |---|---|
/// | Trains | `ret_text_hidden_fcs`, `visual_fc`, `logit_scale` |
/// | Negatives | the other rows of the batch (use a batch size of at least 2) |
/// | Persistence | `mlContext.Gill().Model.Save` |
///
/// GILL trains these jointly with E_img (`mlContext.Gill().Trainers.Gill`); staged training approximates it.
/// ]]></format>
/// </remarks>
public sealed class RetrievalProjectionTrainer : GillEstimatorBase<RetrievalProjectionTransformer>
{
    internal const string Stage = "Retrieval";

    /// <summary>Options of the retrieval projection trainer.</summary>
    public sealed class Options : GillStageTrainerOptions
    {
        /// <summary>The fitted stage to start from (normally the [IMG] token or mapper stage). Required.</summary>
        public GillStageTransformerBase? StartFrom { get; set; }

        /// <summary>[IMG] hidden state column.</summary>
        public string ImgHiddenStatesColumnName { get; set; } = GillColumnNames.ImgHiddenStates;

        /// <summary>Visual feature column.</summary>
        public string FeaturesColumnName { get; set; } = GillColumnNames.ClipPooledFeatures;

        /// <summary>Text-side output column.</summary>
        public string TextEmbeddingColumnName { get; set; } = GillColumnNames.TextRetrievalEmbedding;

        /// <summary>Image-side output column.</summary>
        public string ImageEmbeddingColumnName { get; set; } = GillColumnNames.ImageRetrievalEmbedding;

        internal override void Validate()
        {
            base.Validate();
            if (BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "The contrastive loss needs at least 2 rows per batch.");
            if (StartFrom is null) throw new ArgumentNullException(nameof(StartFrom), "Retrieval needs Options.StartFrom (a fitted GILL stage).");
            foreach (var (n, v) in new[] { (nameof(ImgHiddenStatesColumnName), ImgHiddenStatesColumnName), (nameof(FeaturesColumnName), FeaturesColumnName),
                         (nameof(TextEmbeddingColumnName), TextEmbeddingColumnName), (nameof(ImageEmbeddingColumnName), ImageEmbeddingColumnName) })
                if (string.IsNullOrWhiteSpace(v)) throw new ArgumentException($"{n} must not be empty.", n);
        }
    }

    private readonly Options _options;

    internal RetrievalProjectionTrainer(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        var t = RetrievalProjectionTransformer.Columns(options.StartFrom!.Parts, options.ImgHiddenStatesColumnName, options.FeaturesColumnName,
            options.TextEmbeddingColumnName, options.ImageEmbeddingColumnName);
        InputColumns = t.Inputs;
        OutputColumns = t.Outputs;
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override RetrievalProjectionTransformer FitCore(IDataView input)
    {
        int seed = ResolveSeed(_options.Seed);
        var parts = _options.StartFrom!.Parts.Clone(seed);
        try
        {
            var heads = parts.Core.Heads;
            var trained = heads.named_parameters()
                .Where(p => p.name.StartsWith("ret_text_hidden_fcs.", StringComparison.Ordinal) || p.name.StartsWith("visual_fc.", StringComparison.Ordinal) || p.name == "logit_scale")
                .Select(p => p.parameter).ToArray();
            StageTraining.Run(Context, Stage, _options, seed, trained, heads.parameters().ToArray(), input, InputColumns, batch =>
            {
                var core = parts.Core;
                var text = core.TextRetrievalEmbedding(batch.GetTensor(_options.ImgHiddenStatesColumnName, core.Device));
                var image = core.ImageRetrievalEmbedding(batch.GetTensor(_options.FeaturesColumnName, core.Device));
                return GillLosses.InfoNce(text, image, heads.LogitScale, ContrastiveReduction.Average).Loss;
            });
            return new RetrievalProjectionTransformer(Context, parts, _options.ImgHiddenStatesColumnName, _options.FeaturesColumnName,
                _options.TextEmbeddingColumnName, _options.ImageEmbeddingColumnName, _options.TransformBatchSize);
        }
        catch
        {
            parts.Release();
            throw;
        }
    }
}

/// <summary>[IMG] hidden states and visual features → normalised retrieval embeddings (see <see cref="RetrievalProjectionTrainer"/>).</summary>
[GillStage(RetrievalProjectionTrainer.Stage)]
public sealed class RetrievalProjectionTransformer : GillStageTransformerBase
{
    internal RetrievalProjectionTransformer(MLContext context, GillParts parts, string hiddenColumn, string featuresColumn, string textColumn, string imageColumn, int batchSize)
        : base(context, RetrievalProjectionTrainer.Stage, batchSize, parts)
    {
        ImgHiddenStatesColumnName = hiddenColumn;
        FeaturesColumnName = featuresColumn;
        TextEmbeddingColumnName = textColumn;
        ImageEmbeddingColumnName = imageColumn;
        (InputColumns, OutputColumns) = Columns(parts, hiddenColumn, featuresColumn, textColumn, imageColumn);
    }

    internal static (IReadOnlyList<GillColumn> Inputs, IReadOnlyList<GillColumn> Outputs) Columns(GillParts parts, string hidden, string features, string text, string image)
    {
        var c = parts.Config;
        return (new[] { GillColumn.FloatVector(hidden, c.NumTokens, parts.Backbone.EmbeddingSize), GillColumn.FloatVector(features, c.VisualHiddenSize) },
            new[] { GillColumn.FloatVector(text, c.RetEmbDim), GillColumn.FloatVector(image, c.RetEmbDim) });
    }

    /// <summary>[IMG] hidden state column.</summary>
    public string ImgHiddenStatesColumnName { get; }

    /// <summary>Visual feature column.</summary>
    public string FeaturesColumnName { get; }

    /// <summary>Text-side output column.</summary>
    public string TextEmbeddingColumnName { get; }

    /// <summary>Image-side output column.</summary>
    public string ImageEmbeddingColumnName { get; }

    /// <summary>exp(logit_scale): the inverse temperature of the learned similarity.</summary>
    public double LogitScale => Math.Exp(Parts.Core.Heads.LogitScale.item<float>());

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch)
    {
        var core = Parts.Core;
        if (batch.IsOutputActive(TextEmbeddingColumnName))
            batch.SetOutput(TextEmbeddingColumnName, core.TextRetrievalEmbedding(batch.GetTensor(ImgHiddenStatesColumnName, core.Device)));
        if (batch.IsOutputActive(ImageEmbeddingColumnName))
            batch.SetOutput(ImageEmbeddingColumnName, core.ImageRetrievalEmbedding(batch.GetTensor(FeaturesColumnName, core.Device)));
    }

    private sealed record Saved(
        [property: JsonPropertyName("imgHiddenStatesColumnName")] string ImgHiddenStatesColumnName,
        [property: JsonPropertyName("featuresColumnName")] string FeaturesColumnName,
        [property: JsonPropertyName("textEmbeddingColumnName")] string TextEmbeddingColumnName,
        [property: JsonPropertyName("imageEmbeddingColumnName")] string ImageEmbeddingColumnName);

    internal override object StageOptions => new Saved(ImgHiddenStatesColumnName, FeaturesColumnName, TextEmbeddingColumnName, ImageEmbeddingColumnName);

    internal static RetrievalProjectionTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, RetrievalProjectionTrainer.Stage);
        var o = reader.GetOptions<Saved>("stage");
        return new RetrievalProjectionTransformer(reader.Context, GillParts.LoadFrom(reader), o.ImgHiddenStatesColumnName, o.FeaturesColumnName,
            o.TextEmbeddingColumnName, o.ImageEmbeddingColumnName, reader.BatchSizeOr(32));
    }
}
