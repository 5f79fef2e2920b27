using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Gill.ML.MLNet;

/// <summary>
/// Base class of Gill.ML transformers: a row-to-row transform that reads some input columns and adds output columns,
/// computed by one batched function call per batch of rows.
/// <para>
/// <see cref="Transform"/> is lazy: its cursor pulls <see cref="BatchSize"/> rows from the input, runs
/// <see cref="ProcessBatch"/> once (inside a TorchSharp dispose scope and <c>no_grad</c>), and serves the outputs row by
/// row; other columns pass through unchanged. <see cref="GetRowToRowMapper"/> (used by <c>PredictionEngine</c>) runs one
/// row at a time with a cache keyed by row position, so all output getters of a row share one call.
/// </para>
/// <para>
/// Gill stages cannot be written by <c>mlContext.Model.Save</c> (ML.NET's save context is internal); use
/// <c>mlContext.Gill().Model.Save(model, inputSchema, path)</c>, which writes the ML.NET part and the Gill stages into one zip.
/// </para>
/// </summary>
public abstract class GillTransformerBase : ITransformer, IDisposable
{
    private bool _disposed;

    /// <summary>Creates the base with the context, a stage name (for messages) and the batch size.</summary>
    protected GillTransformerBase(MLContext context, string stageName, int batchSize)
    {
        Context = context ?? throw new ArgumentNullException(nameof(context));
        if (string.IsNullOrWhiteSpace(stageName)) throw new ArgumentException("The stage name must not be empty.", nameof(stageName));
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "The batch size must be positive.");
        StageName = stageName;
        BatchSize = batchSize;
    }

    /// <summary>The ML.NET context (log, seed, device settings).</summary>
    protected MLContext Context { get; }

    /// <summary>The stage's name, used in messages and in saved models.</summary>
    public string StageName { get; }

    /// <summary>Rows per batched call in <see cref="Transform"/>.</summary>
    public int BatchSize { get; }

    /// <summary>Folder that relative image paths are resolved against (null: the current directory).</summary>
    public virtual string? ImageFolder => null;

    /// <summary>Cancellation checked before every batch.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>The columns this stage reads.</summary>
    public abstract IReadOnlyList<GillColumn> InputColumns { get; }

    /// <summary>The columns this stage adds.</summary>
    public abstract IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <summary>
    /// Computes the outputs of one batch. Called once per batch of up to <see cref="BatchSize"/> rows (one row in the
    /// prediction-engine path), inside a TorchSharp dispose scope and under <c>no_grad</c>. It must fill every active
    /// output (<see cref="GillBatch.IsOutputActive"/>).
    /// </summary>
    protected abstract void ProcessBatch(GillBatch batch);

    /// <summary>Number of batched calls made so far (all cursors and mappers of this transformer).</summary>
    public long BatchCalls => Interlocked.Read(ref _batchCalls);
    private long _batchCalls;

    internal void RunBatch(GillBatch batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CancellationToken.ThrowIfCancellationRequested();
        if (batch.Count == 0) return;
        Interlocked.Increment(ref _batchCalls);
        using (torch.NewDisposeScope())
        using (torch.no_grad())
        {
            ProcessBatch(batch);
        }
        batch.CheckOutputsWritten();
    }

    /// <summary>Checks the input schema (names, types, vector sizes) and returns the indices of the input columns.</summary>
    internal (int Index, ImageSource Source)[] CheckInputSchema(DataViewSchema inputSchema) =>
        GillSchema.CheckInputs(inputSchema ?? throw new ArgumentNullException(nameof(inputSchema)), InputColumns, StageName);

    /// <inheritdoc />
    public bool IsRowToRowMapper => true;

    /// <inheritdoc />
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        CheckInputSchema(inputSchema);
        return GillSchema.BuildOutputSchema(inputSchema, OutputColumns);
    }

    /// <inheritdoc />
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var columns = CheckInputSchema(input.Schema);
        return new GillBatchedDataView(this, input, columns);
    }

    /// <inheritdoc />
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var columns = CheckInputSchema(inputSchema);
        return new GillRowMapper(this, inputSchema, columns);
    }

    /// <summary>
    /// Always throws: ML.NET's model format has no public way to store a third-party transformer. Use
    /// <c>mlContext.Gill().Model.Save(model, inputSchema, path)</c>.
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx) =>
        throw new NotSupportedException(
            $"The Gill.ML stage '{StageName}' ({GetType().Name}) cannot be saved with mlContext.Model.Save: ML.NET's model format is closed to " +
            "third-party transformers. Use mlContext.Gill().Model.Save(model, inputSchema, path) and mlContext.Gill().Model.Load(path, out inputSchema) instead.");

    /// <summary>Releases owned modules; override and call the base.</summary>
    protected virtual void Dispose(bool disposing) => _disposed = true;

    /// <summary>True once disposed.</summary>
    protected bool IsDisposed => _disposed;

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        Dispose(true);
        _disposed = true;
        GC.SuppressFinalize(this);
    }
}
