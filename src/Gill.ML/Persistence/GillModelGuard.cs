using System.ComponentModel;
using Microsoft.ML;

namespace Gill.ML.Persistence;

/// <summary>
/// The guard stored as the root ML.NET model of a Gill model file: a <c>CustomMapping</c> with no columns whose contract
/// name tells the reader what to call. ML.NET cannot find a factory for it, so a plain <c>mlContext.Model.Load</c> fails
/// with an error quoting that name instead of returning a chain without its Gill stages.
/// </summary>
internal static class GillModelGuard
{
    /// <summary>The contract name ML.NET quotes when a plain load fails.</summary>
    public const string ContractName = "Gill.ML model: load this file with mlContext.Gill().Model.Load(path) (it holds Gill stages that mlContext.Model.Load cannot restore)";

    public static ITransformer Create(MLContext context)
    {
        var empty = context.Data.LoadFromEnumerable(Array.Empty<GillModelGuardRow>());
        return context.Transforms.CustomMapping<GillModelGuardRow, GillModelGuardRow>(static (_, _) => { }, ContractName).Fit(empty);
    }
}

/// <summary>An empty row type used by the guard of Gill model files; not for direct use.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class GillModelGuardRow
{
}
