using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Gill.ML.MLNet;

/// <summary>How an image input column holds its images.</summary>
internal enum ImageSource
{
    /// <summary>Not an image column.</summary>
    None,
    /// <summary>An <c>MLImage</c> column.</summary>
    MLImage,
    /// <summary>A text column of image file paths.</summary>
    Path,
}

/// <summary>
/// Schema checks and output-schema computation for Gill stages, through public ML.NET APIs only.
/// <para>
/// <see cref="SchemaShape.Column"/>'s constructor is internal, so an estimator cannot build the columns it adds. A throwaway
/// <c>mlContext.Transforms.CustomMapping</c> whose output <see cref="SchemaDefinition"/> carries the wanted name and type
/// is public and computes exactly that column; one mapping per added column is chained over the input shape. The mapping
/// is never fitted or run.
/// </para>
/// </summary>
internal static class GillSchema
{
    /// <summary>Input type of the shape-only mappings: it reads no column.</summary>
    public sealed class NoInput
    {
    }

    /// <summary>Output carrier for a float-vector column.</summary>
    public sealed class VectorOutput
    {
        public VBuffer<float> Value;
    }

    /// <summary>Output carrier for a float column.</summary>
    public sealed class FloatOutput
    {
        public float Value;
    }

    /// <summary>Output carrier for a boolean column.</summary>
    public sealed class BooleanOutput
    {
        public bool Value;
    }

    /// <summary>Output carrier for a text column.</summary>
    public sealed class TextOutput
    {
        public ReadOnlyMemory<char> Value;
    }

    /// <summary>Output carrier for a key column.</summary>
    public sealed class KeyOutput
    {
        public uint Value;
    }

    /// <summary>The input shape with the given output columns added (replacing same-named columns).</summary>
    public static SchemaShape AddColumns(MLContext context, SchemaShape input, IEnumerable<GillColumn> outputs)
    {
        var shape = input;
        foreach (var c in outputs)
            shape = c.Kind switch
            {
                GillColumnKind.FloatVector => Add<VectorOutput>(context, shape, c),
                GillColumnKind.Float => Add<FloatOutput>(context, shape, c),
                GillColumnKind.Boolean => Add<BooleanOutput>(context, shape, c),
                GillColumnKind.Text => Add<TextOutput>(context, shape, c),
                GillColumnKind.Key => Add<KeyOutput>(context, shape, c),
                _ => throw new InvalidOperationException($"Column '{c.Name}' of kind {c.Kind} cannot be an output column."),
            };
        return shape;
    }

    private static SchemaShape Add<TOut>(MLContext context, SchemaShape shape, GillColumn column) where TOut : class, new()
    {
        var outDef = SchemaDefinition.Create(typeof(TOut));
        outDef[0].ColumnName = column.Name;
        outDef[0].ColumnType = column.ToDataViewType();
        var inDef = SchemaDefinition.Create(typeof(NoInput));
        var mapping = context.Transforms.CustomMapping<NoInput, TOut>((_, _) => { }, contractName: null, inDef, outDef);
        return mapping.GetOutputSchema(shape);
    }

    /// <summary>Output carrier for a column of any type.</summary>
    public sealed class AnyOutput<T>
    {
        public T Value = default!;
    }

    /// <summary>The <see cref="SchemaShape"/> of a data schema's visible columns (public replacement of the internal SchemaShape.Create).</summary>
    public static SchemaShape ToShape(MLContext context, DataViewSchema schema)
    {
        var shape = new SchemaShape(Array.Empty<SchemaShape.Column>());
        foreach (var c in schema.Where(c => !c.IsHidden))
        {
            var carrier = typeof(AnyOutput<>).MakeGenericType(c.Type.RawType);
            var add = typeof(GillSchema).GetMethod(nameof(AddTyped), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!.MakeGenericMethod(carrier);
            shape = (SchemaShape)add.Invoke(null, new object[] { context, shape, c.Name, c.Type })!;
        }
        return shape;
    }

    private static SchemaShape AddTyped<TOut>(MLContext context, SchemaShape shape, string name, DataViewType type) where TOut : class, new()
    {
        var outDef = SchemaDefinition.Create(typeof(TOut));
        outDef[0].ColumnName = name;
        outDef[0].ColumnType = type;
        var inDef = SchemaDefinition.Create(typeof(NoInput));
        return context.Transforms.CustomMapping<NoInput, TOut>((_, _) => { }, contractName: null, inDef, outDef).GetOutputSchema(shape);
    }

    /// <summary>The output <see cref="DataViewSchema"/>: every input column (hidden ones included), then the outputs.</summary>
    public static DataViewSchema BuildOutputSchema(DataViewSchema input, IReadOnlyList<GillColumn> outputs)
    {
        var b = new DataViewSchema.Builder();
        b.AddColumns(input);
        foreach (var c in outputs)
        {
            if (c.Kind == GillColumnKind.Key && c.KeyNames is { } names)
            {
                var ab = new DataViewSchema.Annotations.Builder();
                var values = names.Select(n => n.AsMemory()).ToArray();
                ValueGetter<VBuffer<ReadOnlyMemory<char>>> getter = (ref VBuffer<ReadOnlyMemory<char>> dst) =>
                    dst = new VBuffer<ReadOnlyMemory<char>>(values.Length, values);
                ab.Add("KeyValues", new VectorDataViewType(TextDataViewType.Instance, values.Length), getter);
                b.AddColumn(c.Name, c.ToDataViewType(), ab.ToAnnotations());
            }
            else
            {
                b.AddColumn(c.Name, c.ToDataViewType());
            }
        }
        return b.ToSchema();
    }

    /// <summary>
    /// Checks the stage's inputs against a <see cref="SchemaShape"/> (estimator side: names, kinds and item types; vector
    /// sizes are not part of a shape and are checked on the data schema).
    /// </summary>
    public static void CheckInputs(SchemaShape shape, IEnumerable<GillColumn> inputs, string stage)
    {
        foreach (var want in inputs)
        {
            var found = shape.FirstOrDefault(c => c.Name == want.Name);
            if (found.Name is null) throw MissingColumn(stage, want, shape.Select(c => c.Name));
            bool ok = want.Kind switch
            {
                GillColumnKind.FloatVector => found.Kind == SchemaShape.Column.VectorKind.Vector && found.ItemType == NumberDataViewType.Single && !found.IsKey,
                GillColumnKind.Float => found.Kind == SchemaShape.Column.VectorKind.Scalar && found.ItemType == NumberDataViewType.Single && !found.IsKey,
                GillColumnKind.Boolean => found.Kind == SchemaShape.Column.VectorKind.Scalar && found.ItemType is BooleanDataViewType,
                GillColumnKind.Text => found.Kind == SchemaShape.Column.VectorKind.Scalar && found.ItemType is TextDataViewType,
                GillColumnKind.Image => found.Kind == SchemaShape.Column.VectorKind.Scalar && found.ItemType is ImageDataViewType or TextDataViewType,
                GillColumnKind.Key => found.IsKey && found.Kind == SchemaShape.Column.VectorKind.Scalar,
                _ => false,
            };
            if (!ok)
            {
                string? foundText = found.Kind switch
                {
                    SchemaShape.Column.VectorKind.Vector => $"Vector<{found.ItemType}>",
                    SchemaShape.Column.VectorKind.VariableVector => $"Vector<{found.ItemType}> of variable length",
                    _ => found.ItemType.ToString() ?? "?",
                };
                throw WrongType(stage, want, foundText ?? "?");
            }
        }
    }

    /// <summary>
    /// Checks the stage's inputs against a data schema, including vector sizes. Returns, per input, its column index and,
    /// for images, whether the column holds <c>MLImage</c> values or paths.
    /// </summary>
    public static (int Index, ImageSource Source)[] CheckInputs(DataViewSchema schema, IReadOnlyList<GillColumn> inputs, string stage)
    {
        var result = new (int, ImageSource)[inputs.Count];
        for (int i = 0; i < inputs.Count; i++)
        {
            var want = inputs[i];
            var col = schema.GetColumnOrNull(want.Name);
            if (col is null) throw MissingColumn(stage, want, schema.Where(c => !c.IsHidden).Select(c => c.Name));
            var t = col.Value.Type;
            var source = ImageSource.None;
            bool ok;
            switch (want.Kind)
            {
                case GillColumnKind.FloatVector:
                    ok = t is VectorDataViewType v && v.ItemType == NumberDataViewType.Single && v.IsKnownSize && (want.Size == 0 || v.Size == want.Size);
                    break;
                case GillColumnKind.Float: ok = t == NumberDataViewType.Single; break;
                case GillColumnKind.Boolean: ok = t is BooleanDataViewType; break;
                case GillColumnKind.Text: ok = t is TextDataViewType; break;
                case GillColumnKind.Image:
                    source = t is ImageDataViewType ? ImageSource.MLImage : t is TextDataViewType ? ImageSource.Path : ImageSource.None;
                    ok = source != ImageSource.None;
                    break;
                case GillColumnKind.Key: ok = t is KeyDataViewType; break;
                default: ok = false; break;
            }
            if (!ok) throw WrongType(stage, want, GillColumn.DescribeType(t));
            result[i] = (col.Value.Index, source);
        }
        return result;
    }

    private static ArgumentOutOfRangeException MissingColumn(string stage, GillColumn want, IEnumerable<string> available) =>
        new("inputSchema", $"{stage}: input column '{want.Name}' ({want.Describe()}) was not found. Available columns: {string.Join(", ", available.Select(n => "'" + n + "'"))}.");

    private static ArgumentOutOfRangeException WrongType(string stage, GillColumn want, string found) =>
        new("inputSchema", $"{stage}: input column '{want.Name}' has type {found}, expected {want.Describe()}.");
}
