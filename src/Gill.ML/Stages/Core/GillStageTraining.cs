using System.Diagnostics;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Training;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Stages;

/// <summary>
/// Options shared by GILL's per-stage trainers (each trains one part with the others frozen). The names mirror the
/// original <c>main.py</c> flags.
/// </summary>
public abstract class GillStageTrainerOptions
{
    /// <summary>Rows per optimizer step.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>Passes over the data.</summary>
    public int Epochs { get; set; } = 1;

    /// <summary>AdamW learning rate (constant).</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>AdamW decoupled weight decay (applied to the trained tensors only).</summary>
    public double WeightDecay { get; set; } = 0.01;

    /// <summary>Global-norm gradient clipping; 0 disables it.</summary>
    public double GradClip { get; set; } = 1.0;

    /// <summary>Seed of initialisation and data order; null draws one from the MLContext's seeded random source.</summary>
    public int? Seed { get; set; }

    /// <summary>Progress after each optimizer step.</summary>
    public IProgress<GillTrainingProgress>? Progress { get; set; }

    /// <summary>Cancellation, checked before every step (throws <see cref="OperationCanceledException"/>).</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>Rows per batched call of the fitted transformer.</summary>
    public int TransformBatchSize { get; set; } = 32;

    /// <summary>Writes an ML.NET channel message every this many steps.</summary>
    public int LogEveryNSteps { get; set; } = 50;

    internal virtual void Validate()
    {
        if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
        if (Epochs <= 0) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Epochs must be positive.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive and finite.");
        if (WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be non-negative.");
        if (GradClip < 0) throw new ArgumentOutOfRangeException(nameof(GradClip), GradClip, "GradClip must be non-negative.");
        if (TransformBatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(TransformBatchSize), TransformBatchSize, "TransformBatchSize must be positive.");
        if (LogEveryNSteps <= 0) throw new ArgumentOutOfRangeException(nameof(LogEveryNSteps), LogEveryNSteps, "LogEveryNSteps must be positive.");
    }
}

/// <summary>Reads training rows in a seeded, shuffled order into batches of the stage's input columns.</summary>
internal static class StageData
{
    public static IEnumerable<MLNet.GillBatch> Batches(MLContext context, IDataView data, IReadOnlyList<GillColumn> inputs, int batchSize, int? shuffleSeed, string stage, string? imageFolder)
    {
        var view = shuffleSeed is { } s ? context.Data.ShuffleRows(data, s) : data;
        var cols = GillSchema.CheckInputs(view.Schema, inputs, stage);
        using var cursor = view.GetRowCursor(cols.Select(c => view.Schema[c.Index]));
        var reader = new MLNet.GillBatch.RowReader(cursor, inputs, cols);
        using var batch = new MLNet.GillBatch(stage, inputs, cols.Select(c => c.Source).ToArray(), Array.Empty<GillColumn>(), Array.Empty<bool>(), batchSize, imageFolder);
        // Rows are named by their row id (the source position for in-memory views and files, kept through shuffling).
        var idGetter = cursor.GetIdGetter();
        DataViewRowId id = default;
        while (cursor.MoveNext())
        {
            idGetter(ref id);
            batch.AddRow((long)id.Low, reader);
            if (batch.Count == batchSize)
            {
                yield return batch;
                batch.Reset();
            }
        }
        if (batch.Count > 0) yield return batch;
    }

    public static long CountRows(IDataView data)
    {
        if (data.GetRowCount() is long n) return n;
        long count = 0;
        using var cursor = data.GetRowCursor(Array.Empty<DataViewSchema.Column>());
        while (cursor.MoveNext()) count++;
        return count;
    }
}

/// <summary>The optimisation loop of the per-stage trainers: AdamW over the stage's tensors only, one scope per step.</summary>
internal static class StageTraining
{
    /// <param name="context">Context (channel logs).</param>
    /// <param name="stage">Stage name.</param>
    /// <param name="options">Shared options.</param>
    /// <param name="seed">The fit's seed.</param>
    /// <param name="trained">The tensors this stage trains.</param>
    /// <param name="all">Every trainable tensor of the parts (all but <paramref name="trained"/> are frozen during the run).</param>
    /// <param name="data">Training data.</param>
    /// <param name="inputs">Columns to read.</param>
    /// <param name="loss">Loss of one batch (in the step's scope).</param>
    /// <param name="afterStep">Runs after each optimizer step, under no_grad (e.g. E_img re-normalisation).</param>
    public static IReadOnlyList<double> Run(MLContext context, string stage, GillStageTrainerOptions options, int seed, IReadOnlyList<Parameter> trained,
        IReadOnlyList<Parameter> all, IDataView data, IReadOnlyList<GillColumn> inputs, Func<MLNet.GillBatch, Tensor> loss, Action? afterStep = null)
    {
        using var ch = ((IHostEnvironment)context).Start("Gill." + stage);
        long rows = StageData.CountRows(data);
        if (rows == 0) throw new InvalidDataException($"{stage}: the training data has no rows.");
        long perEpoch = (rows + options.BatchSize - 1) / options.BatchSize;
        long total = perEpoch * options.Epochs;
        ch.Info(MessageSensitivity.None, $"{stage}: training {trained.Sum(p => p.numel())} parameters on {rows} rows, {options.Epochs} epoch(s), {total} steps, seed {seed}.");
        torch.random.manual_seed(seed);
        var trainedSet = new HashSet<Parameter>(trained);
        var requires = all.Select(p => p.requires_grad).ToArray();
        foreach (var p in all) p.requires_grad = trainedSet.Contains(p);
        var history = new List<double>();
        try
        {
            using var optimizer = torch.optim.AdamW(trained, options.LearningRate, 0.9, 0.95, 1e-8, options.WeightDecay);
            long step = 0;
            for (int epoch = 0; epoch < options.Epochs; epoch++)
            {
                foreach (var batch in StageData.Batches(context, data, inputs, options.BatchSize, unchecked(seed + epoch), stage, null))
                {
                    options.CancellationToken.ThrowIfCancellationRequested();
                    var watch = Stopwatch.StartNew();
                    double value;
                    using (var scope = torch.NewDisposeScope())
                    {
                        optimizer.zero_grad();
                        var l = loss(batch);
                        l.backward();
                        value = l.item<float>();
                        if (!double.IsFinite(value)) throw new InvalidOperationException($"{stage}: the loss became {value} at step {step + 1}.");
                        if (options.GradClip > 0) torch.nn.utils.clip_grad_norm_(trained, options.GradClip);
                        optimizer.step();
                        if (afterStep is not null)
                            using (torch.no_grad()) afterStep();
                    }
                    step++;
                    history.Add(value);
                    var values = new GillLossValues(value, 0, 0, 0, 0, 0);
                    options.Progress?.Report(new GillTrainingProgress(stage, step, total, values, options.LearningRate, batch.Count / Math.Max(watch.Elapsed.TotalSeconds, 1e-9), epoch));
                    if (step % options.LogEveryNSteps == 0 || step == total)
                        ch.Info(MessageSensitivity.None, $"{stage}: step {step}/{total}, loss {value:G5}.");
                }
            }
        }
        finally
        {
            for (int i = 0; i < all.Count; i++) all[i].requires_grad = requires[i];
        }
        return history;
    }
}

/// <summary>
/// Base of the transformers of GILL's trained stages: they share the trained parts (backbone lease, heads, decision
/// classifier) by reference count, so a joint model's stages cost no extra memory. Saved with
/// <c>mlContext.Gill().Model.Save</c>: the manifest records the GILL architecture, maximum sequence length, seed, the
/// language model and tokenizer (path + SHA-256), the tokenizer additions; <c>weights.safetensors</c> holds the trainable tensors.
/// </summary>
public abstract class GillStageTransformerBase : GillTransformerBase, IGillPersistable
{
    internal GillStageTransformerBase(MLContext context, string stageName, int batchSize, GillParts parts) : base(context, stageName, batchSize)
    {
        Parts = parts;
    }

    internal GillParts Parts { get; }

    /// <summary>The GILL architecture (a copy; [IMG] ids, BOS and pad ids are the backbone's).</summary>
    public GillConfig Architecture => Parts.Config.Clone();

    /// <summary>The seed the parts were trained with.</summary>
    public int Seed => Parts.Seed;

    /// <summary>Maximum token sequence length (BOS + caption + [IMG] tokens).</summary>
    public int MaxSequenceLength => Parts.MaxSequenceLength;

    /// <summary>The frozen language model and tokenizer.</summary>
    public GillLanguageBackbone Backbone => Parts.Backbone;

    /// <inheritdoc />
    public int FormatVersion => 1;

    /// <summary>Stage options written under "stage" in the manifest.</summary>
    internal abstract object StageOptions { get; }

    /// <inheritdoc />
    public virtual void SaveTo(GillModelWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        Parts.WriteTo(writer);
        writer.SetOptions("stage", StageOptions);
        writer.SetOptions("batchSize", BatchSize);
    }

    internal static void CheckVersion(GillModelReader reader, string stage)
    {
        if (reader.FormatVersion != 1)
            throw new InvalidDataException($"{reader.StageFolder}: {stage} format version {reader.FormatVersion} is not supported (expected 1).");
    }

    /// <summary>All trainable tensors of the parts.</summary>
    internal IReadOnlyList<Parameter> AllParameters => Parts.Core.Heads.parameters().ToArray();

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing && !IsDisposed) Parts.Release();
        base.Dispose(disposing);
    }
}

/// <summary>Resolves the parts a per-stage trainer starts from.</summary>
internal static class StageStart
{
    public static GillParts Resolve(GillLanguageBackbone? backbone, GillStageTransformerBase? startFrom, GillConfig? architecture, int maxLength, int seed, string stage)
    {
        if (startFrom is not null) return startFrom.Parts.Clone(seed);
        if (backbone is null)
            throw new ArgumentException($"{stage}: give either a backbone (Options.Backbone) or a fitted GILL stage to start from (Options.StartFrom).");
        var arch = architecture ?? GillConfig.Default();
        return GillParts.Create(new BackboneLease(backbone, owned: false), arch, maxLength, seed);
    }
}

/// <summary>Helpers for stage loaders.</summary>
internal static class StageReaderExtensions
{
    /// <summary>The batch size a stage was saved with, or <paramref name="fallback"/>.</summary>
    public static int BatchSizeOr(this GillModelReader reader, int fallback)
    {
        try
        {
            return reader.GetOptions<int>("batchSize");
        }
        catch (InvalidDataException)
        {
            return fallback;
        }
    }
}
