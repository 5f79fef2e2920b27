using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Training;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.GillMapper;

/// <summary>
/// Distils the text-to-image model's text encoder into GILL's generation mapper f_ω: (h[IMG] + E_img) → L×m
/// conditioning, trained with the generation loss l_g (per-token L2 as the released code, or MSE) against the target
/// column; E_img and everything else stay frozen.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `ImgHiddenStatesColumnName` (default `ImgHiddenStates`) | in | `Vector<Single, r, D>` |
/// | `TargetColumnName` (default `GenerationTarget`) | in (training only) | `Vector<Single, L, m>` |
/// | `OutputColumnName` (default `GenerationEmbedding`) | out | `Vector<Single, L, m>` |
///
/// | Characteristic | Value |
/// |---|---|
/// | Trains | `gen_text_hidden_fcs` (the mapper and its learned queries) only |
/// | Start | `StartFrom` must be the fitted [IMG] token stage (the mapper reads its E_img) |
/// | Persistence | `mlContext.Gill().Model.Save` |
///
/// GILL trains the mapper jointly with the other parts (`mlContext.Gill().Trainers.Gill`); staged training approximates it.
/// ]]></format>
/// </remarks>
public sealed class GillMapperTrainer : GillEstimatorBase<GillMapperTransformer>
{
    internal const string Stage = "GillMapper";

    /// <summary>Options of the mapper distillation trainer.</summary>
    public sealed class Options : GillStageTrainerOptions
    {
        /// <summary>The fitted stage to start from (normally the <see cref="ImgTokens.ImgTokenTransformer"/>). Required.</summary>
        public GillStageTransformerBase? StartFrom { get; set; }

        /// <summary>[IMG] hidden state column.</summary>
        public string ImgHiddenStatesColumnName { get; set; } = GillColumnNames.ImgHiddenStates;

        /// <summary>Target column (training only).</summary>
        public string TargetColumnName { get; set; } = GillColumnNames.GenerationTarget;

        /// <summary>Output column.</summary>
        public string OutputColumnName { get; set; } = GillColumnNames.GenerationEmbedding;

        /// <summary>Generation loss (L2 per token as the released code, or MSE as the paper).</summary>
        public GenerationLossKind Loss { get; set; } = GenerationLossKind.L2;

        internal override void Validate()
        {
            base.Validate();
            if (StartFrom is null) throw new ArgumentNullException(nameof(StartFrom), "GillMapper needs Options.StartFrom (the fitted [IMG] token stage, whose E_img the mapper reads).");
            foreach (var (n, v) in new[] { (nameof(ImgHiddenStatesColumnName), ImgHiddenStatesColumnName), (nameof(TargetColumnName), TargetColumnName), (nameof(OutputColumnName), OutputColumnName) })
                if (string.IsNullOrWhiteSpace(v)) throw new ArgumentException($"{n} must not be empty.", n);
        }
    }

    private readonly Options _options;

    internal GillMapperTrainer(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        var c = options.StartFrom!.Architecture;
        InputColumns = new[] { GillColumn.FloatVector(options.ImgHiddenStatesColumnName, c.NumTokens, options.StartFrom.Backbone.EmbeddingSize) };
        OutputColumns = new[] { GillColumn.FloatVector(options.OutputColumnName, c.NumClipTokens, c.GenEmbDim) };
        TrainingColumns = new[] { GillColumn.FloatVector(options.TargetColumnName, c.NumClipTokens, c.GenEmbDim) };
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> TrainingColumns { get; }

    /// <inheritdoc />
    protected override GillMapperTransformer FitCore(IDataView input)
    {
        int seed = ResolveSeed(_options.Seed);
        var parts = _options.StartFrom!.Parts.Clone(seed);
        try
        {
            var heads = parts.Core.Heads;
            var trained = heads.named_parameters().Where(p => p.name.StartsWith("gen_text_hidden_fcs.", StringComparison.Ordinal)).Select(p => p.parameter).ToArray();
            StageTraining.Run(Context, Stage, _options, seed, trained, heads.parameters().ToArray(), input, InputColumns.Concat(TrainingColumns).ToArray(), batch =>
            {
                var output = parts.Core.GenerationEmbedding(batch.GetTensor(_options.ImgHiddenStatesColumnName, parts.Core.Device));
                return GillLosses.Generation(output, batch.GetTensor(_options.TargetColumnName, parts.Core.Device), _options.Loss);
            });
            return new GillMapperTransformer(Context, parts, _options.ImgHiddenStatesColumnName, _options.OutputColumnName, _options.TransformBatchSize);
        }
        catch
        {
            parts.Release();
            throw;
        }
    }
}

/// <summary>[IMG] hidden states → generation embedding [L, m] (see <see cref="GillMapperTrainer"/>).</summary>
[GillStage(GillMapperTrainer.Stage)]
public sealed class GillMapperTransformer : GillStageTransformerBase
{
    internal GillMapperTransformer(MLContext context, GillParts parts, string inputColumn, string outputColumn, int batchSize)
        : base(context, GillMapperTrainer.Stage, batchSize, parts)
    {
        ImgHiddenStatesColumnName = inputColumn;
        OutputColumnName = outputColumn;
        var c = parts.Config;
        InputColumns = new[] { GillColumn.FloatVector(inputColumn, c.NumTokens, parts.Backbone.EmbeddingSize) };
        OutputColumns = new[] { GillColumn.FloatVector(outputColumn, c.NumClipTokens, c.GenEmbDim) };
    }

    /// <summary>Input column.</summary>
    public string ImgHiddenStatesColumnName { get; }

    /// <summary>Output column.</summary>
    public string OutputColumnName { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch) =>
        batch.SetOutput(OutputColumnName, Parts.Core.GenerationEmbedding(batch.GetTensor(ImgHiddenStatesColumnName, Parts.Core.Device)));

    private sealed record Saved(
        [property: JsonPropertyName("imgHiddenStatesColumnName")] string ImgHiddenStatesColumnName,
        [property: JsonPropertyName("outputColumnName")] string OutputColumnName);

    internal override object StageOptions => new Saved(ImgHiddenStatesColumnName, OutputColumnName);

    internal static GillMapperTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, GillMapperTrainer.Stage);
        var o = reader.GetOptions<Saved>("stage");
        return new GillMapperTransformer(reader.Context, GillParts.LoadFrom(reader), o.ImgHiddenStatesColumnName, o.OutputColumnName, reader.BatchSizeOr(32));
    }
}
