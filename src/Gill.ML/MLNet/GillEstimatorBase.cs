using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace Gill.ML.MLNet;

/// <summary>
/// Base class of Gill.ML estimators. <see cref="GetOutputSchema"/> checks the input shape and adds the output columns
/// through public ML.NET APIs; <see cref="Fit"/> checks the input data schema (names, types, vector sizes) first, then
/// calls <see cref="FitCore"/> to train or build the transformer.
/// </summary>
/// <typeparam name="TTransformer">The fitted transformer type.</typeparam>
public abstract class GillEstimatorBase<TTransformer> : IEstimator<TTransformer> where TTransformer : GillTransformerBase
{
    /// <summary>Creates the base with the context and a stage name (for messages).</summary>
    protected GillEstimatorBase(MLContext context, string stageName)
    {
        Context = context ?? throw new ArgumentNullException(nameof(context));
        StageName = stageName;
    }

    /// <summary>The ML.NET context.</summary>
    protected MLContext Context { get; }

    /// <summary>Stage name used in messages.</summary>
    public string StageName { get; }

    /// <summary>The columns the fitted transformer reads.</summary>
    public abstract IReadOnlyList<GillColumn> InputColumns { get; }

    /// <summary>The columns the fitted transformer adds.</summary>
    public abstract IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <summary>Columns read only while fitting (labels, targets); checked by <see cref="Fit"/>, not by the transformer.</summary>
    public virtual IReadOnlyList<GillColumn> TrainingColumns => Array.Empty<GillColumn>();

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        GillSchema.CheckInputs(inputSchema, InputColumns, StageName);
        return GillSchema.AddColumns(Context, inputSchema, OutputColumns);
    }

    /// <inheritdoc />
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        GillSchema.CheckInputs(input.Schema, InputColumns, StageName);
        GillSchema.CheckInputs(input.Schema, TrainingColumns, StageName);
        return FitCore(input);
    }

    /// <summary>
    /// The seed of one <see cref="Fit"/>: <paramref name="explicitSeed"/> when given, otherwise drawn from the context's
    /// seeded random source for this stage (so <c>new MLContext(seed)</c> makes fits reproducible). Record it in the
    /// fitted transformer (and its saved manifest).
    /// </summary>
    protected int ResolveSeed(int? explicitSeed) =>
        explicitSeed ?? ((IHostEnvironment)Context).Register("Gill." + StageName).Rand.Next();

    /// <summary>Starts a channel whose messages reach <c>MLContext.Log</c> (dispose it when done).</summary>
    protected IChannel StartChannel() => ((IHostEnvironment)Context).Start("Gill." + StageName);

    /// <summary>Trains or builds the transformer; the schema has been checked.</summary>
    protected abstract TTransformer FitCore(IDataView input);
}
