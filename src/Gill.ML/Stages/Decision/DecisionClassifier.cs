using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Modules;
using Gill.ML.Persistence;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.Decision;

/// <summary>
/// Trains GILL's retrieve-or-generate classifier (released variant: Dropout 0.5 + Linear(D, 2) on the [IMG0] hidden
/// state, cross-entropy, full-batch AdamW as the original notebook) on labelled rows; the rest of the model is frozen.
/// GILL trains it separately, after the mappings have converged.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `ImgHiddenStatesColumnName` (default `ImgHiddenStates`) | in | `Vector<Single, r, D>` |
/// | `LabelColumnName` (default `Label`) | in (training only) | `Boolean`: true = retrieve, false = generate |
/// | `PredictedLabelColumnName` (default `PredictedLabel`) | out | `Key<UInt32>` with values Generate, Retrieve |
/// | `ProbabilityColumnName` (default `Probability`) | out | `Single`: probability of Retrieve |
/// ]]></format>
/// </remarks>
public sealed class DecisionClassifierTrainer : GillEstimatorBase<DecisionClassifierTransformer>
{
    internal const string Stage = "Decision";

    /// <summary>Key value names of the predicted label (key 1 = Generate, key 2 = Retrieve).</summary>
    public static readonly IReadOnlyList<string> LabelNames = new[] { "Generate", "Retrieve" };

    /// <summary>Options of the decision classifier trainer.</summary>
    public sealed class Options
    {
        /// <summary>The fitted stage to start from (its parts are copied and the classifier added). Required.</summary>
        public GillStageTransformerBase? StartFrom { get; set; }

        /// <summary>[IMG] hidden state column.</summary>
        public string ImgHiddenStatesColumnName { get; set; } = GillColumnNames.ImgHiddenStates;

        /// <summary>Label column (training only).</summary>
        public string LabelColumnName { get; set; } = GillColumnNames.Label;

        /// <summary>Predicted label column.</summary>
        public string PredictedLabelColumnName { get; set; } = GillColumnNames.PredictedLabel;

        /// <summary>Probability column.</summary>
        public string ProbabilityColumnName { get; set; } = GillColumnNames.Probability;

        /// <summary>Full-batch optimizer steps (the notebook: 2000).</summary>
        public int Steps { get; set; } = 2000;

        /// <summary>AdamW learning rate.</summary>
        public double LearningRate { get; set; } = 1e-3;

        /// <summary>AdamW weight decay.</summary>
        public double WeightDecay { get; set; }

        /// <summary>Seed; null draws one from the MLContext.</summary>
        public int? Seed { get; set; }

        /// <summary>Rows per batched call of the fitted transformer.</summary>
        public int TransformBatchSize { get; set; } = 32;

        /// <summary>Cancellation, checked between steps.</summary>
        public CancellationToken CancellationToken { get; set; }

        internal void Validate()
        {
            if (StartFrom is null) throw new ArgumentNullException(nameof(StartFrom), "Decision needs Options.StartFrom (a fitted GILL stage).");
            if (Steps <= 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Steps must be positive.");
            if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive.");
            if (WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be non-negative.");
            if (TransformBatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(TransformBatchSize), TransformBatchSize, "TransformBatchSize must be positive.");
            foreach (var (n, v) in new[] { (nameof(ImgHiddenStatesColumnName), ImgHiddenStatesColumnName), (nameof(LabelColumnName), LabelColumnName),
                         (nameof(PredictedLabelColumnName), PredictedLabelColumnName), (nameof(ProbabilityColumnName), ProbabilityColumnName) })
                if (string.IsNullOrWhiteSpace(v)) throw new ArgumentException($"{n} must not be empty.", n);
        }
    }

    private readonly Options _options;

    internal DecisionClassifierTrainer(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        (InputColumns, OutputColumns) = DecisionClassifierTransformer.Columns(options.StartFrom!.Parts, options.ImgHiddenStatesColumnName, options.PredictedLabelColumnName, options.ProbabilityColumnName);
        TrainingColumns = new[] { GillColumn.Boolean(options.LabelColumnName) };
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> TrainingColumns { get; }

    /// <inheritdoc />
    protected override DecisionClassifierTransformer FitCore(IDataView input)
    {
        int seed = ResolveSeed(_options.Seed);
        var parts = _options.StartFrom!.Parts.Clone(seed);
        try
        {
            var hidden = new List<float>();
            var labels = new List<long>();
            int d = parts.Backbone.EmbeddingSize, r = parts.Config.NumTokens;
            foreach (var batch in StageData.Batches(Context, input, InputColumns.Concat(TrainingColumns).ToArray(), 256, null, Stage, null))
            {
                var h = batch.GetFloatVectors(_options.ImgHiddenStatesColumnName);
                for (int i = 0; i < batch.Count; i++) hidden.AddRange(h.Slice(i * r * d, d).ToArray()); // [IMG0] row
                foreach (var l in batch.GetBooleans(_options.LabelColumnName)) labels.Add(l ? 1 : 0);
            }
            if (labels.Count == 0) throw new InvalidDataException($"{Stage}: the training data has no rows.");
            using var ch = StartChannel();
            ch.Info(MessageSensitivity.None, $"{Stage}: {labels.Count} rows ({labels.Count(l => l == 1)} retrieve), {_options.Steps} full-batch steps, seed {seed}.");
            var classifier = new GillDecisionClassifier(GillDecisionKind.Released, d, seed);
            classifier.To(parts.Backbone.Device);
            parts.Decision?.Dispose();
            parts.Decision = classifier;
            using (var scope = torch.NewDisposeScope())
            {
                var x = torch.tensor(hidden.ToArray(), new long[] { labels.Count, d }).to(parts.Backbone.Device);
                var y = torch.tensor(labels.ToArray()).to(parts.Backbone.Device);
                var history = classifier.Train(x, y, null, new GillDecisionTrainingOptions
                {
                    Steps = _options.Steps, LearningRate = _options.LearningRate, WeightDecay = _options.WeightDecay, Seed = seed,
                }, _options.CancellationToken);
                ch.Info(MessageSensitivity.None, $"{Stage}: final loss {history[^1]:G5}.");
            }
            return new DecisionClassifierTransformer(Context, parts, _options.ImgHiddenStatesColumnName, _options.PredictedLabelColumnName, _options.ProbabilityColumnName, _options.TransformBatchSize);
        }
        catch
        {
            parts.Release();
            throw;
        }
    }
}

/// <summary>[IMG] hidden states → Generate/Retrieve decision and the probability of Retrieve (see <see cref="DecisionClassifierTrainer"/>).</summary>
[GillStage(DecisionClassifierTrainer.Stage)]
public sealed class DecisionClassifierTransformer : GillStageTransformerBase
{
    internal DecisionClassifierTransformer(MLContext context, GillParts parts, string hiddenColumn, string predictedColumn, string probabilityColumn, int batchSize)
        : base(context, DecisionClassifierTrainer.Stage, batchSize, parts)
    {
        if (parts.Decision is null) throw new InvalidOperationException("The parts have no decision classifier.");
        ImgHiddenStatesColumnName = hiddenColumn;
        PredictedLabelColumnName = predictedColumn;
        ProbabilityColumnName = probabilityColumn;
        (InputColumns, OutputColumns) = Columns(parts, hiddenColumn, predictedColumn, probabilityColumn);
    }

    internal static (IReadOnlyList<GillColumn>, IReadOnlyList<GillColumn>) Columns(GillParts parts, string hidden, string predicted, string probability) =>
        (new[] { GillColumn.FloatVector(hidden, parts.Config.NumTokens, parts.Backbone.EmbeddingSize) },
         new[] { GillColumn.Key(predicted, DecisionClassifierTrainer.LabelNames.ToArray()), GillColumn.Float(probability) });

    /// <summary>[IMG] hidden state column.</summary>
    public string ImgHiddenStatesColumnName { get; }

    /// <summary>Predicted label column.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Probability (of Retrieve) column.</summary>
    public string ProbabilityColumnName { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch)
    {
        var h0 = batch.GetTensor(ImgHiddenStatesColumnName, Parts.Backbone.Device).select(1, 0);
        var p = Parts.Decision!.RetrieveProbability(h0).cpu().data<float>().ToArray();
        if (batch.IsOutputActive(ProbabilityColumnName)) p.CopyTo(batch.GetOutputFloats(ProbabilityColumnName));
        if (batch.IsOutputActive(PredictedLabelColumnName))
        {
            var keys = batch.GetOutputKeys(PredictedLabelColumnName);
            for (int i = 0; i < p.Length; i++) keys[i] = p[i] > 0.5f ? 2u : 1u;
        }
    }

    private sealed record Saved(
        [property: JsonPropertyName("imgHiddenStatesColumnName")] string ImgHiddenStatesColumnName,
        [property: JsonPropertyName("predictedLabelColumnName")] string PredictedLabelColumnName,
        [property: JsonPropertyName("probabilityColumnName")] string ProbabilityColumnName);

    internal override object StageOptions => new Saved(ImgHiddenStatesColumnName, PredictedLabelColumnName, ProbabilityColumnName);

    internal static DecisionClassifierTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, DecisionClassifierTrainer.Stage);
        var o = reader.GetOptions<Saved>("stage");
        return new DecisionClassifierTransformer(reader.Context, GillParts.LoadFrom(reader), o.ImgHiddenStatesColumnName, o.PredictedLabelColumnName, o.ProbabilityColumnName, reader.BatchSizeOr(32));
    }
}
