using Microsoft.ML;

namespace Gill.ML.MLNet;

/// <summary>Public helpers around <see cref="SchemaShape"/>, whose factory methods are internal to ML.NET.</summary>
public static class GillSchemaShape
{
    /// <summary>
    /// The <see cref="SchemaShape"/> of a data schema's visible columns, for calling
    /// <see cref="IEstimator{TTransformer}.GetOutputSchema"/> on a pipeline before fitting it.
    /// </summary>
    public static SchemaShape FromSchema(MLContext context, DataViewSchema schema)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(schema);
        return GillSchema.ToShape(context, schema);
    }
}
